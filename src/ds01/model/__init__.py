"""Frozen value types shared by every part of ds01. Imports only ds01.errors."""

from ds01.model.allocation import AllocState, can_transition
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Gpu, GpuProcess, MachineSample, MigDevice, Unit, UnitKind
from ds01.model.limits import Limits
from ds01.model.profile import MigProfile, Variant, parse_profile

__all__ = [
    "AllocState",
    "Gpu",
    "GpuEq",
    "GpuProcess",
    "Limits",
    "MachineSample",
    "MigDevice",
    "MigProfile",
    "Unit",
    "UnitKind",
    "Variant",
    "can_transition",
    "parse_profile",
]
