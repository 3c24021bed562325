"""NvmlBackend.sample() on NVML answers a real H200 gave, through a fake `pynvml` module.

tests/inventory/fake_nvml/pynvml.py answers as the machine described in a JSON file does. Each
case runs the backend in a subprocess whose PYTHONPATH puts the fake first: ds01 imports
"pynvml" as it always does and nothing in ds01 is patched. The machines:

- the H200 of tests/fixtures/h200/ as recorded (raw NVML answers from scripts/nvml-probe.py):
  the sample must be the one ds01 took on that host;
- that H200 in MIG mode, laid out as the MIG H200 of tests/fixtures/nvidia-smi/ (`-L` and the
  default table, driver 590): 1c.3g.71gb, 2c.3g.71gb, 2g.35gb, 1g.18gb, 1g.18gb;
- fields NVML does not support, a lost GPU, a driver that is not loaded.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest

HERE = Path(__file__).resolve().parent
FAKE_DIR = HERE / "fake_nvml"
FIXTURES = HERE.parent / "fixtures"
PROBE = json.loads((FIXTURES / "h200" / "h200-driver580-nvml-probe.json").read_text())
LGIP = (FIXTURES / "h200" / "h200-driver580-mig-lgip.txt").read_text()
MIB = 1024 * 1024

H200_UUID = "GPU-a8c6ca6e-7bcb-4d25-e05a-cc3de6aa2830"
NOT_SUPPORTED = {"error": "NVMLError_NotSupported", "message": "Not Supported"}
NO_PERMISSION = {"error": "NVMLError_NoPermission", "message": "Insufficient Permissions"}
GPU_IS_LOST = {"error": "NVMLError_GpuIsLost", "message": "GPU is lost"}
REFUSED = "The GPU or its driver is in a bad state, so this sample is refused as a whole."
ADMIN = "Run nvidia-smi on the host; a lost GPU needs an administrator."

# Run in the subprocess: the backend, as ds01d runs it, with whatever `pynvml` the path gives.
SAMPLE = """
import json
import pynvml
from ds01.errors import InventoryError
from ds01.inventory.export import sample_to_json
from ds01.inventory.nvml import NvmlBackend

backend = NvmlBackend()
try:
    out = {"sample": sample_to_json(backend.sample())}
except InventoryError as err:
    out = {"error": err.lines(), "cause": type(err.__cause__).__name__}
finally:
    backend.close()
out["pynvml"] = pynvml.__file__
print(json.dumps(out))
"""


def sample(machine: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """NvmlBackend().sample() in a fresh interpreter on `machine`: the sample as JSON, or the
    InventoryError's lines and the NVML error class behind it."""
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(machine))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FAKE_DIR), os.environ.get("PYTHONPATH", "")]),
        "DS01_FAKE_NVML": str(path),
    }
    r = subprocess.run(
        [sys.executable, "-c", SAMPLE], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert out.pop("pynvml") == str(FAKE_DIR / "pynvml.py")  # the fake, not NVIDIA's module
    return out


def sysfs_numa_node(bus_id: str) -> int | None:
    """Where NVML has no NUMA node the backend reads the PCI device's node in sysfs (its
    documented fallback): on a test host that device usually does not exist."""
    try:
        node = int(Path(f"/sys/bus/pci/devices/{bus_id[-12:].lower()}/numa_node").read_text())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def h200() -> dict[str, Any]:
    """The recorded H200, as NVML answered on that host (a fresh copy to change)."""
    machine = copy.deepcopy(PROBE["nvml_raw"])
    machine["devices"][0]["gpu_instance_profiles"] = profile_table()
    return machine


def recorded_gpu() -> dict[str, Any]:
    """The GPU as ds01 reported it on that host, numa_node as this host's sysfs gives it."""
    gpu = dict(PROBE["ds01_sample"]["gpus"][0])
    gpu["numa_node"] = sysfs_numa_node(gpu["pci_bus_id"])
    return gpu


# ---- the H200's GPU-instance profiles (nvidia-smi mig -lgip) ---------------------------------

# NVML's enum for each profile name; -lgip prints the name and the profile ID, not the enum.
ENUM_OF = {
    "1g.18gb": pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE,
    "1g.18gb+me": pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1,
    "1g.35gb": pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2,
    "2g.35gb": pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE,
    "3g.71gb": pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE,
    "4g.71gb": pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE,
    "7g.141gb": pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE,
}
LGIP_ROW = re.compile(r"^\|\s+\d+\s+MIG (\S+)\s+(\d+)\s+\d+/(\d+)\s+([\d.]+)\s", re.MULTILINE)


def profile_table() -> dict[str, dict[str, int]]:
    """nvmlDeviceGetGpuInstanceProfileInfo answers (by enum) from the -lgip capture."""
    table = {}
    for name, profile_id, count, gib in LGIP_ROW.findall(LGIP):
        table[str(ENUM_OF[name])] = {
            "id": int(profile_id),
            "sliceCount": int(name.split("g.")[0]),
            "instanceCount": int(count),
            "memorySizeMB": round(float(gib) * 1024),
        }
    assert len(table) == len(ENUM_OF), table
    return table


# ---- the MIG layout of the MIG H200 capture --------------------------------------------------

# tests/fixtures/nvidia-smi/table-1xH200-mig-5devices-idle-driver590.txt (GI, CI, MIG device,
# memory used / total MiB, SMs) and L-1xH200-mig-1c.3g-2c.3g-2g-1g-1g-driver590-masked.txt
# (each device's profile and masked UUID). Compute slices: the "Nc." of the name, else the GI's.
MIG_LAYOUT = [
    # slot, GI, CI, GI slices, CI slices, used MiB, total MiB, SMs, profile enum, -L profile
    (0, 2, 0, 3, 1, 22, 71424, 16, "3g.71gb", "1c.3g.71gb"),
    (1, 2, 1, 3, 2, 22, 71424, 32, "3g.71gb", "2c.3g.71gb"),
    (2, 3, 0, 2, 2, 17, 33280, 32, "2g.35gb", "2g.35gb"),
    (3, 9, 0, 1, 1, 9, 16384, 16, "1g.18gb", "1g.18gb"),
    (4, 10, 0, 1, 1, 9, 16384, 16, "1g.18gb", "1g.18gb"),
]


def mig_uuid(slot: int) -> str:
    return f"MIG-0000000{slot}-0000-0000-0000-00000000000{slot}"


def mig_h200() -> dict[str, Any]:
    """The recorded H200 switched to MIG mode with the captured layout; one process, pid 4242,
    runs on MIG device 3."""
    machine = h200()
    gpu = machine["devices"][0]
    gpu["nvmlDeviceGetMigMode"] = [1, 1]
    gpu["nvmlDeviceGetUtilizationRates"] = NOT_SUPPORTED  # NVML has none for a MIG GPU
    gpu["nvmlDeviceGetMemoryInfo"]["used"] = 55 * MIB  # the table's GPU line: 55MiB used
    gpu["nvmlDeviceGetMaxMigDeviceCount"] = 7
    gpu["mig_devices"] = [
        {
            "slot": slot,
            "nvmlDeviceGetUUID": mig_uuid(slot),
            "nvmlDeviceGetGpuInstanceId": gi,
            "nvmlDeviceGetComputeInstanceId": ci,
            "nvmlDeviceGetAttributes": {
                "multiprocessorCount": sms,
                "gpuInstanceSliceCount": gi_slices,
                "computeInstanceSliceCount": ci_slices,
                "memorySizeMB": total,
            },
            "nvmlDeviceGetMemoryInfo": {
                "total": total * MIB,
                "free": (total - used) * MIB,
                "used": used * MIB,
            },
            "nvmlDeviceGetComputeRunningProcesses": (
                [
                    {
                        "pid": 4242,
                        "usedGpuMemory": 1024 * MIB,
                        "gpuInstanceId": gi,
                        "computeInstanceId": ci,
                    }
                ]
                if slot == 3
                else []
            ),
            "gpu_instance_profile_enum": ENUM_OF[gi_profile],
        }
        for slot, gi, ci, gi_slices, ci_slices, used, total, sms, gi_profile, _ in MIG_LAYOUT
    ]
    machine["process_names"] = {"4242": "python"}
    return machine


# ---- the fake itself -------------------------------------------------------------------------


def test_the_fake_uses_nvidia_ml_pys_constants_and_error_classes() -> None:
    spec = importlib.util.spec_from_file_location("fake_pynvml", FAKE_DIR / "pynvml.py")
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    sys.modules["fake_pynvml"] = fake  # its error classes find their module by name
    try:
        spec.loader.exec_module(fake)
        names = [n for n in vars(fake) if n.startswith(("NVML_", "NVMLError_"))]
        assert len(names) > 60
        for name in names:
            real = getattr(pynvml, name)
            if name.startswith("NVMLError_"):
                mine = getattr(fake, name)()
                assert (mine.value, str(mine)) == (real().value, str(real())), name
            else:
                assert getattr(fake, name) == real, name
        # What ds01 asks for and the fake lacks fails as NVML does without the symbol.
        with pytest.raises(fake.NVMLError_FunctionNotFound):
            fake.nvmlDeviceGetBAR1MemoryInfo(None)
        assert isinstance(fake.NVMLError(15), fake.NVMLError_GpuIsLost)
        assert str(fake.NVMLError_GpuIsLost()) == "GPU is lost"
    finally:
        del sys.modules["fake_pynvml"]


# ---- the recorded H200 -----------------------------------------------------------------------


def test_the_recorded_h200_gives_the_sample_ds01_took_on_it(tmp_path: Path) -> None:
    got = sample(h200(), tmp_path)["sample"]
    recorded = PROBE["ds01_sample"]
    (gpu,) = got["gpus"]
    assert {k: gpu[k] for k in recorded["gpus"][0]} == recorded_gpu()
    assert (gpu["uuid"], gpu["memory_total_mib"], gpu["memory_used_mib"]) == (
        H200_UUID,
        143771,
        615,
    )
    assert got["processes"] == recorded["processes"] == []
    assert (got["source"], got["driver_version"], got["warnings"]) == ("nvml", "580.159.04", [])


def test_the_h200_in_mig_mode_reports_each_mig_device_with_its_profile_and_gpueq(
    tmp_path: Path,
) -> None:
    got = sample(mig_h200(), tmp_path)["sample"]
    (gpu,) = got["gpus"]
    assert (gpu["uuid"], gpu["mig_enabled"], gpu["memory_total_mib"], gpu["memory_used_mib"]) == (
        H200_UUID,
        True,
        143771,
        55,
    )
    assert gpu["utilization_pct"] is None  # per GPU only, and a MIG GPU has none
    assert [
        (
            m["index"],
            m["uuid"],
            m["profile"],
            m["gpu_instance_id"],
            m["compute_instance_id"],
            m["memory_total_mib"],
            m["memory_used_mib"],
            m["gpueq_exact"],
        )
        for m in gpu["mig_devices"]
    ] == [
        (0, mig_uuid(0), "1c.3g.71gb", 2, 0, 71424, 22, "1/7"),
        (1, mig_uuid(1), "2c.3g.71gb", 2, 1, 71424, 22, "2/7"),
        (2, mig_uuid(2), "2g.35gb", 3, 0, 33280, 17, "2/7"),
        (3, mig_uuid(3), "1g.18gb", 9, 0, 16384, 9, "1/7"),
        (4, mig_uuid(4), "1g.18gb", 10, 0, 16384, 9, "1/7"),
    ]
    # The names are the ones nvidia-smi -L printed on the captured MIG H200.
    assert [m["profile"] for m in gpu["mig_devices"]] == [row[-1] for row in MIG_LAYOUT]
    assert got["processes"] == [
        {
            "pid": 4242,
            "gpu_uuid": H200_UUID,
            "used_memory_mib": 1024,
            "name": "python",
            "unit_uuid": mig_uuid(3),
            "unit_name": "0/9.0",  # GPU 0, GPU instance 9, compute instance 0 (the 1g.18gb)
        }
    ]
    assert got["warnings"] == []


def test_a_me_profile_is_named_with_its_suffix(tmp_path: Path) -> None:
    machine = mig_h200()
    machine["devices"][0]["mig_devices"][4]["gpu_instance_profile_enum"] = ENUM_OF["1g.18gb+me"]
    (gpu,) = sample(machine, tmp_path)["sample"]["gpus"]
    assert [m["profile"] for m in gpu["mig_devices"]][3:] == ["1g.18gb", "1g.18gb+me"]
    assert [m["gpueq_exact"] for m in gpu["mig_devices"]][3:] == ["1/7", "1/7"]


def test_without_root_mig_profiles_lose_their_suffix_with_a_warning(tmp_path: Path) -> None:
    machine = mig_h200()
    machine["devices"][0]["nvmlDeviceGetGpuInstanceById"] = NO_PERMISSION  # needs root
    got = sample(machine, tmp_path)["sample"]
    (gpu,) = got["gpus"]
    assert [m["profile"] for m in gpu["mig_devices"]] == [row[-1] for row in MIG_LAYOUT]
    assert got["warnings"] == [
        "MIG profile attributes such as +me need root to read; profile names may lack them"
    ]


# ---- what NVML does not answer ---------------------------------------------------------------


def test_fields_nvml_does_not_support_are_none_never_zero(tmp_path: Path) -> None:
    machine = h200()
    gpu_raw = machine["devices"][0]
    for call in (
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetTemperature(GPU)",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetPciInfo.busId",
    ):
        gpu_raw[call] = NOT_SUPPORTED
    gpu_raw["nvmlDeviceGetPowerUsage"] = NO_PERMISSION
    (gpu,) = sample(machine, tmp_path)["sample"]["gpus"]
    assert (gpu["uuid"], gpu["name"]) == (H200_UUID, "NVIDIA H200")
    unknown = (
        "memory_total_mib",
        "memory_used_mib",
        "mig_enabled",
        "utilization_pct",
        "temperature_c",
        "power_w",
        "energy_mj",
        "pci_bus_id",
        "numa_node",  # no bus id either: nothing to look up in sysfs
    )
    assert {k: gpu[k] for k in unknown} == dict.fromkeys(unknown)
    assert gpu["mig_devices"] == []


# ---- failures that refuse the whole sample ---------------------------------------------------


def test_a_lost_gpu_refuses_the_whole_sample(tmp_path: Path) -> None:
    machine = h200()
    machine["devices"][0]["lost"] = True
    assert sample(machine, tmp_path) == {
        "error": ["NVML failed while reading GPU 0: GPU is lost", REFUSED, ADMIN],
        "cause": "NVMLError_GpuIsLost",
    }


def test_a_gpu_lost_during_an_optional_read_is_not_taken_for_unsupported(
    tmp_path: Path,
) -> None:
    # Two GPUs; the second falls off the bus while its temperature is read. A value that is
    # merely unavailable would be None; a lost GPU fails the sample (never half a machine).
    machine = h200()
    second = copy.deepcopy(machine["devices"][0])
    second["index"] = 1
    second["nvmlDeviceGetUUID"] = "GPU-00000000-0000-0000-0000-000000000001"
    second["nvmlDeviceGetTemperature(GPU)"] = GPU_IS_LOST
    machine["devices"].append(second)
    assert sample(machine, tmp_path) == {
        "error": ["NVML failed while reading GPU 1: GPU is lost", REFUSED, ADMIN],
        "cause": "NVMLError_GpuIsLost",
    }


def test_a_driver_that_is_not_loaded_is_said_so(tmp_path: Path) -> None:
    machine = h200()
    machine["init_error"] = "NVMLError_DriverNotLoaded"
    out = sample(machine, tmp_path)
    assert out["cause"] == "NVMLError_DriverNotLoaded"
    assert out["error"][0] == "NVML could not start: the NVIDIA kernel driver is not loaded"
