"""Which NVIDIA runtime variables a user may set (runtime/nvenv.py), for the gate and deploy:
literal cases."""

from __future__ import annotations

import pytest

from ds01.runtime.nvenv import env_problem


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("NVIDIA_DRIVER_CAPABILITIES", "all", None),
        ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility", None),
        ("NVIDIA_DRIVER_CAPABILITIES", "compute, utility,graphics,video,compat32,display", None),
        (
            "NVIDIA_DRIVER_CAPABILITIES",
            "compute,,utility",
            "NVIDIA_DRIVER_CAPABILITIES=compute,,utility is not a list of the documented driver "
            "capabilities (all, compat32, compute, display, graphics, utility, video)",
        ),
        (
            "NVIDIA_DRIVER_CAPABILITIES",
            "ALL",
            "NVIDIA_DRIVER_CAPABILITIES=ALL is not a list of the documented driver capabilities "
            "(all, compat32, compute, display, graphics, utility, video)",
        ),
        (
            "NVIDIA_DRIVER_CAPABILITIES",
            "",
            "NVIDIA_DRIVER_CAPABILITIES= is not a list of the documented driver capabilities "
            "(all, compat32, compute, display, graphics, utility, video)",
        ),
        ("NVIDIA_VISIBLE_DEVICES", "all", "NVIDIA_VISIBLE_DEVICES is set by ds01"),
        ("CUDA_VISIBLE_DEVICES", "0", "CUDA_VISIBLE_DEVICES is set by ds01"),
        ("NVIDIA_MIG_CONFIG_DEVICES", "all", "NVIDIA_MIG_CONFIG_DEVICES is set by ds01"),
        ("NVIDIA_MIG_MONITOR_DEVICES", "all", "NVIDIA_MIG_MONITOR_DEVICES is set by ds01"),
        ("NVIDIA_REQUIRE_CUDA", "cuda>=12.0", None),
        ("HF_HOME", "/data/hf", None),
    ],
)
def test_env_problem(key: str, value: str, problem: str | None) -> None:
    assert env_problem(key, value) == problem
