"""Frozen value types shared by every part of ds01. Imports only ds01.errors."""

from ds01.model.allocation import AllocState, can_transition
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Gpu, GpuProcess, MachineSample, MigDevice, Unit, UnitKind
from ds01.model.limits import Limits

__all__ = [
    "AllocState",
    "Gpu",
    "GpuEq",
    "GpuProcess",
    "Limits",
    "MachineSample",
    "MigDevice",
    "Unit",
    "UnitKind",
    "can_transition",
]
