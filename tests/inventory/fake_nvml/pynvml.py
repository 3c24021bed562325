"""A fake `pynvml` (nvidia-ml-py) that answers as a recorded machine did, for the NVML backend.

ds01.inventory.nvml is the only module in ds01 that imports pynvml. A test runs the backend in
a subprocess whose PYTHONPATH puts this directory first, so that import finds this file instead
of NVIDIA's: ds01's own code and import path run unchanged, nothing in ds01 is patched.

Same names, return shapes and error classes as nvidia-ml-py: NVMLError(code) is an instance of
its NVMLError_<Name> subclass, str() of it is NVML's text; structs are objects with NVML's field
names; strings are str. Only the calls ds01 makes are answered; any other nvml* function raises
NVMLError_FunctionNotFound, as pynvml does when the driver's library lacks the symbol.

The machine is the JSON file named by $DS01_FAKE_NVML (read by nvmlInit), in the shape of the
"nvml_raw" part of scripts/nvml-probe.py's output (one answer per call, errors by class name),
with what the probe does not record added:

    {"driver_version": "580.159.04",
     "init_error": "NVMLError_DriverNotLoaded",      optional: nvmlInit raises it
     "process_names": {"4242": "python"},            nvmlSystemGetProcessName
     "devices": [{
        "nvmlDeviceGetName": "NVIDIA H200",           an answer, or an error:
        "nvmlDeviceGetNumaNodeId": {"error": "NVMLError_NotSupported"},
        "nvmlDeviceGetPciInfo.busId": "00000000:00:06.0",
        "nvmlDeviceGetTemperature(GPU)": 35,
        "lost": true,                                 optional: every call on it, the handle
                                                      lookup included, says the GPU is lost
        "gpu_instance_profiles": {"0": {"id": 19, "sliceCount": 1, "memorySizeMB": 16384}},
                                                      by NVML_GPU_INSTANCE_PROFILE_* value
        "nvmlDeviceGetGpuInstanceById": {"error": "NVMLError_NoPermission"},   optional
        "mig_devices": [{"slot": 0, "nvmlDeviceGetUUID": "MIG-…",
                         "nvmlDeviceGetGpuInstanceId": 2, "nvmlDeviceGetComputeInstanceId": 0,
                         "nvmlDeviceGetAttributes": {"gpuInstanceSliceCount": 3, …},
                         "nvmlDeviceGetMemoryInfo": {…},
                         "nvmlDeviceGetComputeRunningProcesses": [],
                         "gpu_instance_profile_enum": 2}]}]}

A call the file has no answer for raises LookupError: an incomplete machine fails the test
loudly instead of reading as "not supported".
"""

from __future__ import annotations

import json
import os
import string
import sys
from typing import Any

# ---- constants (values as in nvidia-ml-py; tests/inventory/test_nvml_fake.py checks them) ----

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0x0
NVML_GPU_INSTANCE_PROFILE_2_SLICE = 0x1
NVML_GPU_INSTANCE_PROFILE_3_SLICE = 0x2
NVML_GPU_INSTANCE_PROFILE_4_SLICE = 0x3
NVML_GPU_INSTANCE_PROFILE_7_SLICE = 0x4
NVML_GPU_INSTANCE_PROFILE_8_SLICE = 0x5
NVML_GPU_INSTANCE_PROFILE_6_SLICE = 0x6
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 = 0x7
NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1 = 0x8
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2 = 0x9
NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX = 0xA
NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX = 0xB
NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX = 0xC
NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME = 0xD
NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME = 0xE
NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME = 0xF
NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME = 0x10
NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX = 0x11
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12

# ---- errors, built as nvidia-ml-py builds them -----------------------------------------------


class NVMLError(Exception):
    _valClassMapping: dict[int, type[NVMLError]] = {}  # noqa: N815, RUF012 - nvidia-ml-py's
    # nvidia-ml-py's table; it asks the library (nvmlErrorString) for the others.
    _errcode_to_string = {  # noqa: RUF012
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    value: int

    def __new__(cls, value: int) -> NVMLError:
        target = NVMLError._valClassMapping.get(value, cls) if cls is NVMLError else cls
        obj = Exception.__new__(target)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")


def _make_error_classes() -> None:
    # NVML_ERROR_GPU_IS_LOST → NVMLError_GpuIsLost, exactly as nvidia-ml-py names them.
    module = sys.modules[__name__]
    for name in [n for n in dir(module) if n.startswith("NVML_ERROR_")]:
        words = string.capwords(name.removeprefix("NVML_ERROR_"), "_").replace("_", "")
        value = getattr(module, name)

        def new(cls: type[NVMLError], *_: object, _value: int = value) -> NVMLError:
            return NVMLError.__new__(cls, _value)

        error = type(f"NVMLError_{words}", (NVMLError,), {"__new__": new})
        error.__module__ = __name__
        setattr(module, error.__name__, error)
        NVMLError._valClassMapping[value] = error


_make_error_classes()


def _raise(class_name: str) -> None:
    error = getattr(sys.modules[__name__], class_name, None)
    if not (isinstance(error, type) and issubclass(error, NVMLError)):
        raise LookupError(f"fake NVML: no error class {class_name!r}")
    raise error()


# ---- the recorded machine --------------------------------------------------------------------


class _Struct:
    """An NVML struct as nvidia-ml-py hands it out: fields as attributes."""

    def __init__(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"_Struct({vars(self)!r})"


class _Device:
    def __init__(self, index: int, data: dict[str, Any]) -> None:
        self.index = index
        self.data = data
        self.lost = bool(data.get("lost"))


class _MigDevice:
    def __init__(self, parent: _Device, data: dict[str, Any]) -> None:
        self.parent = parent
        self.data = data
        self.lost = parent.lost


class _GpuInstance:
    def __init__(self, parent: _Device, gi_id: int, profile_enum: int) -> None:
        self.parent = parent
        self.gi_id = gi_id
        self.profile_enum = profile_enum


_world: dict[str, Any] | None = None


def _machine() -> dict[str, Any]:
    if _world is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return _world


def _recorded(data: dict[str, Any], call: str, where: str) -> Any:
    """The answer recorded for `call`, raising the error recorded instead of one."""
    if call not in data:
        raise LookupError(f"fake NVML: {where} has no answer for {call}")
    answer = data[call]
    if isinstance(answer, dict) and "error" in answer:
        _raise(answer["error"])
    return answer


def _answer(handle: object, call: str) -> Any:
    if not isinstance(handle, _Device | _MigDevice):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    _machine()
    if handle.lost:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return _recorded(handle.data, call, f"device {handle.data.get('nvmlDeviceGetUUID')}")


def _mig_only(handle: object) -> _MigDevice:
    if not isinstance(handle, _MigDevice):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # NVML: only a MIG device handle has it
    if handle.lost:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return handle


def _parent_only(handle: object) -> _Device:
    if not isinstance(handle, _Device):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if handle.lost:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return handle


# ---- the calls ds01.inventory.nvml makes -----------------------------------------------------


def nvmlInit() -> None:
    global _world  # noqa: PLW0603 - NVML's own state is process-global too
    with open(os.environ["DS01_FAKE_NVML"]) as fh:
        world = json.load(fh)
    if world.get("init_error"):
        _raise(world["init_error"])
    _world = world


def nvmlShutdown() -> None:
    global _world  # noqa: PLW0603
    _machine()
    _world = None


def nvmlSystemGetDriverVersion() -> str:
    return str(_recorded(_machine(), "driver_version", "the machine"))


def nvmlSystemGetNVMLVersion() -> str:
    return str(_recorded(_machine(), "nvml_version", "the machine"))


def nvmlSystemGetCudaDriverVersion() -> int:
    return int(_recorded(_machine(), "cuda_driver_version", "the machine"))


def nvmlSystemGetProcessName(pid: int) -> str:
    names = _machine().get("process_names", {})
    if str(pid) not in names:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return str(names[str(pid)])


def nvmlDeviceGetCount() -> int:
    return len(_machine()["devices"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Device:
    devices = _machine()["devices"]
    if not 0 <= index < len(devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    device = _Device(index, devices[index])
    if device.lost:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return device


def nvmlDeviceGetName(handle: object) -> str:
    return str(_answer(handle, "nvmlDeviceGetName"))


def nvmlDeviceGetUUID(handle: object) -> str:
    return str(_answer(handle, "nvmlDeviceGetUUID"))


def nvmlDeviceGetMemoryInfo(handle: object) -> _Struct:
    return _Struct(_answer(handle, "nvmlDeviceGetMemoryInfo"))


def nvmlDeviceGetMigMode(handle: object) -> list[int]:
    return [int(v) for v in _answer(_parent_only(handle), "nvmlDeviceGetMigMode")]


def nvmlDeviceGetUtilizationRates(handle: object) -> _Struct:
    return _Struct(_answer(handle, "nvmlDeviceGetUtilizationRates"))


def nvmlDeviceGetTemperature(handle: object, sensor: int) -> int:
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_answer(handle, "nvmlDeviceGetTemperature(GPU)"))


def nvmlDeviceGetPowerUsage(handle: object) -> int:
    return int(_answer(handle, "nvmlDeviceGetPowerUsage"))


def nvmlDeviceGetTotalEnergyConsumption(handle: object) -> int:
    return int(_answer(handle, "nvmlDeviceGetTotalEnergyConsumption"))


def nvmlDeviceGetPciInfo(handle: object) -> _Struct:
    return _Struct({"busId": _answer(handle, "nvmlDeviceGetPciInfo.busId")})


def nvmlDeviceGetNumaNodeId(handle: object) -> int:
    return int(_answer(handle, "nvmlDeviceGetNumaNodeId"))


def nvmlDeviceGetComputeRunningProcesses(handle: object) -> list[_Struct]:
    return [_Struct(p) for p in _answer(handle, "nvmlDeviceGetComputeRunningProcesses")]


def nvmlDeviceGetMaxMigDeviceCount(handle: object) -> int:
    return int(_answer(_parent_only(handle), "nvmlDeviceGetMaxMigDeviceCount"))


def nvmlDeviceGetMigDeviceHandleByIndex(handle: object, index: int) -> _MigDevice:
    parent = _parent_only(handle)
    for mig in parent.data.get("mig_devices", []):
        if mig["slot"] == index:
            return _MigDevice(parent, mig)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetGpuInstanceId(handle: object) -> int:
    return int(_answer(_mig_only(handle), "nvmlDeviceGetGpuInstanceId"))


def nvmlDeviceGetComputeInstanceId(handle: object) -> int:
    return int(_answer(_mig_only(handle), "nvmlDeviceGetComputeInstanceId"))


def nvmlDeviceGetAttributes(handle: object) -> _Struct:
    return _Struct(_answer(_mig_only(handle), "nvmlDeviceGetAttributes"))


def nvmlDeviceGetGpuInstanceById(handle: object, gi_id: int) -> _GpuInstance:
    parent = _parent_only(handle)
    if "nvmlDeviceGetGpuInstanceById" in parent.data:  # recorded refusal (needs root)
        _recorded(parent.data, "nvmlDeviceGetGpuInstanceById", "the GPU")
    for mig in parent.data.get("mig_devices", []):
        if mig["nvmlDeviceGetGpuInstanceId"] == gi_id:
            return _GpuInstance(parent, gi_id, int(mig["gpu_instance_profile_enum"]))
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlGpuInstanceGetInfo(gpu_instance: object) -> _Struct:
    if not isinstance(gpu_instance, _GpuInstance):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    profiles = gpu_instance.parent.data["gpu_instance_profiles"]
    profile = profiles[str(gpu_instance.profile_enum)]
    return _Struct({"id": gpu_instance.gi_id, "profileId": profile["id"]})


def nvmlDeviceGetGpuInstanceProfileInfo(handle: object, profile: int, version: int = 2) -> _Struct:
    parent = _parent_only(handle)
    profiles = parent.data.get("gpu_instance_profiles", {})
    if str(profile) not in profiles:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # NVML: a profile this GPU does not have
    return _Struct(profiles[str(profile)])


def __getattr__(name: str) -> Any:
    """Any other nvml* function: the driver's library does not have it (FunctionNotFound)."""
    if not name.startswith("nvml"):
        raise AttributeError(name)

    def missing(*_: object, **__: object) -> Any:
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)

    missing.__name__ = name
    return missing
