"""MIG profiles: the one grammar for a profile name, its parsed form, and each GPU model's slices.

Every MIG profile name ds01 reads goes through parse_profile(): a user's `--mig`, an API body,
a simulated machine file, nvidia-smi's `-L` listing and `mig -lgip` / `mig -lci` tables, and the
names the NVML backend builds from slice counts. So a name is accepted, normalised and refused
the same way everywhere, with one error (MigProfileError, a usage error) for one bad name.

The grammar (case does not matter; spaces around the name are ignored):

    [MIG[ ]] [C "c."] G "g." M "gb" [ "+me" | "+me.all" | "+gfx" | "-me" ]

* G: the GPU instance's slices, 1 to 8.
* C: the compute instance's slices, when it is smaller than its GPU instance (1 to G): a
  compute instance is a unit of its own ('1c.3g.71gb' is one seventh of an H200, not three).
* M: the memory label in GB, as NVIDIA rounds it (a label, not a measurement: 3g.40gb on an
  H100 is 40448 MiB).
* The suffix, as NVML names its GPU-instance profiles (NVIDIA MIG user guide, "Supported MIG
  Profiles"; go-nvlib's naming): `+me` media extensions (the one instance with the GPU's
  JPEG/OFA engines, NVML_GPU_INSTANCE_PROFILE_{1,2}_SLICE_REV1), `+me.all` every media engine
  (…_ALL_ME), `+gfx` graphics APIs (…_GFX, RTX PRO Blackwell), `-me` no media engine (…_NO_ME).
  Other suffixes are refused: ds01 does not guess what a new one means.

The canonical name is lowercase, without the 'MIG ' prefix, with 'Nc.' only when the compute
instance is smaller than its GPU instance: 'MIG 3g.40gb', '3G.40GB' and '3c.3g.40gb' are all
'3g.40gb'. Two names are the same profile exactly when their canonical names are equal.

Matching (docs/allocation.md): a request for a profile gets a unit of exactly that profile.
'1g.10gb' does not take a '1g.10gb+me' unit and '1g.10gb+me' takes nothing else: the variants
differ in their engines (a -me unit has no video decoder, a +me unit holds the GPU's only
JPEG/OFA engines), so each is asked for by its own name, as in Kubernetes' MIG resources.

Pure: imports only ds01.errors and ds01.model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from ds01.errors import MigProfileError
from ds01.model.gpueq import GpuEq

MAX_SLICES = 8  # NVML_GPU_INSTANCE_PROFILE_8_SLICE is the largest GPU instance NVML names

EXAMPLES = "3g.40gb, 1c.3g.71gb or 1g.10gb+me"
_FIX = f"Write it as 'ds01 gpu status' shows it, such as {EXAMPLES}."


class Variant(StrEnum):
    """What a profile's suffix says about its engines (the value is the suffix as written)."""

    PLAIN = ""  # the profile's own share of the GPU's engines
    ME = "+me"  # media extensions: the instance that holds the GPU's JPEG and OFA engines
    ME_ALL = "+me.all"  # every media engine of the GPU
    GFX = "+gfx"  # graphics APIs as well as compute (RTX PRO Blackwell)
    NO_ME = "-me"  # no media engine at all, for pure compute


_SUFFIXES = "+me, +me.all, +gfx or -me"


@dataclass(frozen=True)
class MigProfile:
    """A parsed MIG profile. Build one with parse_profile(), or from slice counts (NVML)."""

    compute_slices: int  # the 'c': equals gpu_slices when the name has no 'Nc.'
    gpu_slices: int  # the 'g': slices of the GPU instance
    memory_gb: int  # the 'gb' label
    variant: Variant = Variant.PLAIN

    def __post_init__(self) -> None:
        problem = _problem(self.compute_slices, self.gpu_slices, self.memory_gb)
        if problem is not None:
            raise ValueError(problem)
        object.__setattr__(self, "variant", Variant(self.variant))  # '+me' → Variant.ME

    @property
    def name(self) -> str:
        """The canonical name: '3g.40gb', '1c.3g.71gb', '1g.10gb+me'."""
        ci = f"{self.compute_slices}c." if self.is_compute_instance else ""
        return f"{ci}{self.gpu_slices}g.{self.memory_gb}gb{self.variant.value}"

    @property
    def is_compute_instance(self) -> bool:
        """True for a compute instance smaller than its GPU instance ('1c.3g.71gb')."""
        return self.compute_slices < self.gpu_slices

    @property
    def gpu_instance(self) -> MigProfile:
        """The profile of the GPU instance this one is in: '1c.3g.71gb' → '3g.71gb'."""
        return MigProfile(self.gpu_slices, self.gpu_slices, self.memory_gb, self.variant)

    @property
    def media_extensions(self) -> bool:
        """True for '+me' and '+me.all': the unit has media engines others lack."""
        return self.variant in (Variant.ME, Variant.ME_ALL)

    def gpueq(self, total_slices: int | None) -> GpuEq | None:
        """Compute slices / the GPU's slices (BRIEF §4): '3g.40gb' on a 7-slice GPU is 3/7,
        '1c.3g.71gb' 1/7. None when the slices are unknown or the profile does not fit."""
        if not total_slices or self.gpu_slices > total_slices:
            return None
        return GpuEq.of(self.compute_slices, total_slices)

    def order(self) -> tuple[int, str]:
        """Sort key, smallest first: '1g.10gb' before '2g.20gb' before '3g.40gb'."""
        return (self.compute_slices, self.name)

    def __str__(self) -> str:
        return self.name


# Lowercased text: optional 'mig' prefix, optional 'Nc.', 'Ng.', 'NNgb', then whatever follows.
_SHAPE = re.compile(
    r"(?:mig\s*)?(?:(?P<c>[0-9]{1,3})c\.)?(?P<g>[0-9]{1,3})g\.(?P<gb>[0-9]{1,5})gb(?P<rest>.*)",
    re.ASCII | re.DOTALL,
)
_VARIANTS = {v.value: v for v in Variant}


def _problem(c: int, g: int, gb: int) -> str | None:
    if not 1 <= g <= MAX_SLICES:
        return f"A GPU instance has 1 to {MAX_SLICES} slices; '{g}g' has {g}."
    if not 1 <= c <= g:
        return f"A compute instance in a {g}g GPU instance has 1 to {g} slices; '{c}c' has {c}."
    if gb < 1:
        return "'0gb' is no memory: the label is the instance's memory in GB."
    return None


def _shown(text: str) -> str:
    s = "".join(ch if ch.isprintable() else "?" for ch in text.strip())
    return s if len(s) <= 40 else s[:40] + "…"


@lru_cache(maxsize=4096)
def _read(text: str) -> MigProfile | str:
    """The profile text names, or why it names none. Cached: the scheduler reads each unit's
    profile on every placement."""
    m = _SHAPE.fullmatch(text.strip().lower())
    if m is None:
        return (
            f"MIG profiles are written [Nc.]Ng.NNgb with an optional {_SUFFIXES}, "
            f"such as {EXAMPLES}."
        )
    rest = m["rest"]
    variant = _VARIANTS.get(rest)
    if variant is None:
        if rest[:1] in ("+", "-"):
            return f"'{_shown(rest)}' is not a MIG profile suffix: NVIDIA's are {_SUFFIXES}."
        return f"Only a suffix ({_SUFFIXES}) may follow '{m['gb']}gb'."
    g = int(m["g"])
    c = int(m["c"]) if m["c"] is not None else g
    gb = int(m["gb"])
    problem = _problem(c, g, gb)
    if problem is not None:
        return problem
    return MigProfile(c, g, gb, variant)


def parse_profile(text: str) -> MigProfile:
    """The one parser of MIG profile names. Raises MigProfileError (exit 2, HTTP 400)."""
    got = _read(text)
    if isinstance(got, str):
        raise MigProfileError(f"'{_shown(text)}' is not a MIG profile name", got, _FIX)
    return got


def profile_or_none(text: str | None) -> MigProfile | None:
    """parse_profile() for names read from a GPU: None instead of an error, because a device of
    a shape ds01 does not know is kept in the inventory (it offers no unit)."""
    if text is None:
        return None
    got = _read(text)
    return None if isinstance(got, str) else got


def canonical_or_printed(text: str) -> str:
    """The canonical name, or the name as printed (stripped) when ds01 does not know its shape,
    so that the inventory shows what the driver said."""
    p = profile_or_none(text)
    return p.name if p is not None else text.strip()


# ---------------------------------------------------------------------------------------------
# How many slices a GPU model has: the denominator of a MIG device's gpueq.

# Matched against the GPU's name (NVIDIA MIG user guide, "Supported GPUs" and the fractions of
# SMs in "Supported MIG Profiles"): A30 and the RTX PRO Blackwell cards have 4 slices, every
# other MIG-capable datacenter GPU 7.
_SLICES_BY_MODEL: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"\bA30\b", re.I), 4),
    (re.compile(r"\bRTX PRO [56]000 Blackwell", re.I), 4),
    (re.compile(r"\b(A100|A800|H100|H800|H200|H20|GH200|B200|GB200|B100|B300)", re.I), 7),
)


def total_slices(gpu_name: str) -> int | None:
    """Total compute slices of a MIG-capable GPU model, or None when ds01 does not know it."""
    for pattern, slices in _SLICES_BY_MODEL:
        if pattern.search(gpu_name):
            return slices
    return None


def mig_gpueq(profile: str, gpu_name: str, slices_total: int | None = None) -> GpuEq | None:
    """gpueq of a MIG device named `profile` on a `gpu_name`, or None when the profile or the
    GPU model is unknown. slices_total overrides the model table (a machine file may say)."""
    p = profile_or_none(profile)
    return p.gpueq(slices_total or total_slices(gpu_name)) if p is not None else None
