"""The NVIDIA container runtime's environment variables in a user's request: which select GPUs
(only ds01 sets those: BRIEF §6 item 3) and which only select driver libraries.

`NVIDIA_VISIBLE_DEVICES` and `CUDA_VISIBLE_DEVICES` select GPUs, and the MIG config/monitor
variables grant MIG management: a user never sets them. `NVIDIA_DRIVER_CAPABILITIES` selects
which driver libraries and tools the runtime mounts into the container (`compute` CUDA,
`utility` nvidia-smi/NVML, `graphics` OpenGL/Vulkan, `video` the codec SDK, `compat32` 32-bit
libraries, `display` X11, `all` every one of them); the GPUs stay those in the container's
device list, which ds01 sets. Its documented values are allowed (an image's `ENV` can set it
anyway); anything else is refused, so a capability NVIDIA adds later is judged before it is
used. Pure: no I/O.
"""

from __future__ import annotations

GPU_SELECTING = frozenset({"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"})
MIG_MANAGEMENT = frozenset({"NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"})
DRIVER_CAPABILITIES_ENV = "NVIDIA_DRIVER_CAPABILITIES"
# NVIDIA Container Toolkit's documented driver capabilities.
DRIVER_CAPABILITIES = frozenset(
    {"compute", "compat32", "graphics", "utility", "video", "display", "all"}
)


def driver_capabilities_ok(value: str) -> bool:
    """A comma-separated list of documented capabilities (no empty items)."""
    items = [item.strip() for item in value.split(",")]
    return bool(items) and all(item in DRIVER_CAPABILITIES for item in items)


def env_problem(key: str, value: str) -> str | None:
    """Why a user may not set `key=value` in a container's environment; None when they may."""
    if key in GPU_SELECTING or key in MIG_MANAGEMENT:
        return f"{key} is set by ds01"
    if key == DRIVER_CAPABILITIES_ENV and not driver_capabilities_ok(value):
        return (
            f"{key}={value} is not a list of the documented driver capabilities "
            f"({', '.join(sorted(DRIVER_CAPABILITIES))})"
        )
    return None
