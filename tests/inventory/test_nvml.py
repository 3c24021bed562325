"""The NVML backend: real behaviour on a machine without NVIDIA's library, and the pure MIG
profile naming checked against profile names printed by real nvidia-smi.

On a GPU machine the library test is skipped; scripts/nvml-probe.py is the check there.
"""

from __future__ import annotations

import ctypes
import inspect

import pytest

from ds01.errors import InventoryError
from ds01.inventory import nvml
from ds01.inventory.backend import InventoryBackend
from ds01.inventory.nvml import NvmlBackend, mig_profile_name, profile_suffix
from ds01.model.profile import Variant

MIB = 1024 * 1024


def _has_libnvidia_ml() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_has_libnvidia_ml(), reason="this machine has NVIDIA's library")
def test_sample_without_the_nvidia_library_says_what_is_missing() -> None:
    backend = NvmlBackend()
    with pytest.raises(InventoryError) as err:
        backend.sample()
    assert err.value.lines() == [
        "NVML is not available: libnvidia-ml.so.1 not found",
        "The NVIDIA driver is not installed on this machine "
        "(or its library is not on the loader path).",
        "Install the NVIDIA driver (nvidia-smi should then work), "
        "or use --sim FILE for a simulated machine (e.g. --sim 4xA100-40GB).",
    ]
    assert type(err.value.__cause__).__name__ == "NVMLError_LibraryNotFound"
    assert err.value.exit_code == 1
    backend.close()  # never started: nothing to shut down, and no error


@pytest.mark.skipif(_has_libnvidia_ml(), reason="this machine has NVIDIA's library")
def test_every_sample_retries_starting_nvml() -> None:
    # A driver may be installed while ds01d runs: failing once must not fail forever.
    backend = NvmlBackend()
    for _ in range(2):
        with pytest.raises(InventoryError, match=r"libnvidia-ml\.so\.1 not found"):
            backend.sample()


def test_nvml_backend_is_an_inventory_backend() -> None:
    backend = NvmlBackend()
    assert isinstance(backend, InventoryBackend)
    assert backend.name == "nvml"
    backend.close()
    backend.close()


# Inputs are what real nvidia-smi printed for each profile: the GPU's total memory
# (`nvidia-smi` Memory-Usage) and the profile's memory (`nvidia-smi mig -lgip` GiB column or the
# MIG device's Memory-Usage). Expected names are the names nvidia-smi printed beside them.
# H200 1g.35gb and 4g.71gb: no capture at hand; their memory is that of 2g.35gb and 3g.71gb,
# which the MIG user guide gives the same memory share (2/8 and 4/8).
@pytest.mark.parametrize(
    ("device_mib", "gi_slices", "ci_slices", "profile_mib", "expected"),
    [
        pytest.param(40537, 1, 1, 4864, "1g.5gb", id="A100-40GB 1g.5gb"),
        pytest.param(40537, 1, 1, 9984, "1g.10gb", id="A100-40GB 1g.10gb"),
        pytest.param(40537, 2, 2, 9984, "2g.10gb", id="A100-40GB 2g.10gb"),
        pytest.param(40537, 3, 3, 20096, "3g.20gb", id="A100-40GB 3g.20gb"),
        pytest.param(40537, 4, 4, 20096, "4g.20gb", id="A100-40GB 4g.20gb"),
        pytest.param(40537, 7, 7, 40320, "7g.40gb", id="A100-40GB 7g.40gb"),
        pytest.param(40537, 4, 1, 20096, "1c.4g.20gb", id="A100-40GB compute instance 1c.4g"),
        pytest.param(40537, 2, 1, 9984, "1c.2g.10gb", id="A100-40GB compute instance 1c.2g"),
        pytest.param(81920, 1, 1, 9728, "1g.10gb", id="A100-80GB 1g.10gb"),
        pytest.param(81920, 1, 1, 19968, "1g.20gb", id="A100-80GB 1g.20gb"),
        pytest.param(81920, 2, 2, 19968, "2g.20gb", id="A100-80GB 2g.20gb"),
        pytest.param(81920, 3, 3, 40448, "3g.40gb", id="A100-80GB 3g.40gb"),
        pytest.param(81920, 4, 4, 40448, "4g.40gb", id="A100-80GB 4g.40gb"),
        pytest.param(81920, 7, 7, 81152, "7g.80gb", id="A100-80GB 7g.80gb"),
        pytest.param(81559, 1, 1, 9984, "1g.10gb", id="H100-80GB 1g.10gb"),
        pytest.param(81559, 1, 1, 20096, "1g.20gb", id="H100-80GB 1g.20gb"),
        pytest.param(81559, 2, 2, 20096, "2g.20gb", id="H100-80GB 2g.20gb"),
        pytest.param(81559, 3, 3, 40448, "3g.40gb", id="H100-80GB 3g.40gb"),
        pytest.param(81559, 4, 4, 40448, "4g.40gb", id="H100-80GB 4g.40gb"),
        pytest.param(81559, 7, 7, 81152, "7g.80gb", id="H100-80GB 7g.80gb"),
        pytest.param(143771, 1, 1, 16384, "1g.18gb", id="H200 1g.18gb"),
        pytest.param(143771, 1, 1, 33280, "1g.35gb", id="H200 1g.35gb"),
        # 33280 MiB is 32.5 GiB: the label is not the memory rounded, it is 2/8 of 141 GB.
        pytest.param(143771, 2, 2, 33280, "2g.35gb", id="H200 2g.35gb is 2/8 of 141 not 32.5"),
        # 4/8 of 141 is 70.5: halves round away from zero (Python's round() would give 70).
        pytest.param(143771, 3, 3, 71424, "3g.71gb", id="H200 3g.71gb rounds the half up"),
        pytest.param(143771, 4, 4, 71424, "4g.71gb", id="H200 4g.71gb"),
        pytest.param(143771, 7, 7, 143360, "7g.141gb", id="H200 7g.141gb"),
        pytest.param(143771, 3, 1, 71424, "1c.3g.71gb", id="H200 compute instance 1c.3g"),
        pytest.param(143771, 3, 2, 71424, "2c.3g.71gb", id="H200 compute instance 2c.3g"),
        pytest.param(24576, 1, 1, 5952, "1g.6gb", id="A30 1g.6gb"),
        pytest.param(24576, 2, 2, 11968, "2g.12gb", id="A30 2g.12gb"),
        pytest.param(24576, 4, 4, 24064, "4g.24gb", id="A30 4g.24gb"),
        pytest.param(24576, 2, 1, 11968, "1c.2g.12gb", id="A30 compute instance 1c.2g.12gb"),
    ],
)
def test_mig_profile_name_matches_nvidia_smi(
    device_mib: int, gi_slices: int, ci_slices: int, profile_mib: int, expected: str
) -> None:
    assert mig_profile_name(gi_slices, ci_slices, profile_mib, device_mib * MIB) == expected


@pytest.mark.parametrize(
    ("gi_profile_enum", "suffix"),
    [
        pytest.param(0, "", id="NVML_GPU_INSTANCE_PROFILE_1_SLICE is plain"),
        pytest.param(7, "+me", id="1_SLICE_REV1 is the +me media-extension profile"),
        pytest.param(8, "+me", id="2_SLICE_REV1 is +me too"),
        pytest.param(15, "+me.all", id="1_SLICE_ALL_ME is +me.all"),
        pytest.param(10, "+gfx", id="1_SLICE_GFX is +gfx"),
        pytest.param(13, "-me", id="1_SLICE_NO_ME is -me"),
        pytest.param(4, "", id="7_SLICE is plain"),
    ],
)
def test_profile_suffix_from_the_gpu_instance_profile(gi_profile_enum: int, suffix: str) -> None:
    assert profile_suffix(gi_profile_enum) == suffix


def test_media_extension_suffix_is_appended_to_the_name() -> None:
    assert mig_profile_name(1, 1, 9984, 81559 * MIB, Variant.ME) == "1g.10gb+me"
    assert mig_profile_name(2, 1, 47380, 97887 * MIB, Variant.NO_ME) == "1c.2g.48gb-me"


READERS = [
    nvml.read_name,
    nvml.read_uuid,
    nvml.read_memory,
    nvml.read_mig_enabled,
    nvml.read_utilization_pct,
    nvml.read_temperature_c,
    nvml.read_power_w,
    nvml.read_energy_mj,
    nvml.read_pci_bus_id,
    nvml.read_numa_node,
    nvml.read_processes,
    nvml.read_process_name,
]


@pytest.mark.parametrize("reader", READERS, ids=lambda f: f.__name__)
def test_each_reader_names_its_nvidia_smi_field(reader: object) -> None:
    # STYLE 4: the parsers are checked against the NVML backend field by field.
    doc = inspect.getdoc(reader) or ""
    assert "nvidia-smi" in doc or "no --query-gpu field" in doc, doc
