"""gpueq weights of MIG profiles (BRIEF §4): compute slices / the parent GPU's total slices.

'3g.40gb' on an H100 = 3/7; '1c.3g.71gb' (a 1-slice compute instance inside a 3g GPU
instance) = 1/7; '2g.12gb' on an A30 (4 slices) = 2/4. A whole GPU is 1.
"""

from __future__ import annotations

import re

from ds01.model.gpueq import GpuEq

# Total compute slices per MIG-capable product; matched against the GPU name.
# A30 is the only 4-slice part; every other MIG-capable datacenter GPU has 7.
_SLICES_BY_MODEL: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"\bA30\b", re.I), 4),
    (
        re.compile(
            r"\b(A100|A800|H100|H800|H200|H20|GH200|B200|GB200|B100|B300|RTX PRO 6000)", re.I
        ),
        7,
    ),
)

# '3g.40gb', '1g.10gb+me', '1c.3g.71gb', '1g.20gb', '7g.80gb', optional 'MIG ' prefix.
_PROFILE = re.compile(
    r"""^(?:MIG\s+)?
        (?:(?P<ci>\d+)c\.)?          # compute-instance slices, when smaller than the GI
        (?P<gi>\d+)g\.               # GPU-instance slices
        (?P<mem>\d+(?:\.\d+)?)gb     # memory
        (?P<extra>(?:\+[a-z0-9]+)*)$ # '+me', '+gfx' media extensions
    """,
    re.X | re.I,
)


def total_slices(gpu_name: str) -> int | None:
    """Total compute slices of a MIG-capable GPU model, or None when ds01 does not know it."""
    for pattern, slices in _SLICES_BY_MODEL:
        if pattern.search(gpu_name):
            return slices
    return None


def normalize_profile(profile: str) -> str | None:
    """'MIG 3g.40gb' → '3g.40gb'; None if it is not a MIG profile name."""
    m = _PROFILE.match(profile.strip())
    if not m:
        return None
    text = profile.strip()
    if text[:3].upper() == "MIG":
        text = text[3:]
    return text.strip().lower()


def compute_slices(profile: str) -> int | None:
    """Compute slices a profile uses: '3g.40gb' → 3, '1c.3g.71gb' → 1; None if not a profile."""
    m = _PROFILE.match(profile.strip())
    if not m:
        return None
    return int(m.group("ci") or m.group("gi"))


def mig_gpueq(profile: str, gpu_name: str, slices_total: int | None = None) -> GpuEq | None:
    """gpueq of a MIG device, or None when the profile or the GPU model is unknown.

    slices_total overrides the model table (NVML and machine files may know it exactly).
    """
    used = compute_slices(profile)
    total = slices_total or total_slices(gpu_name)
    if used is None or not total or used > total:
        return None
    return GpuEq.of(used, total)
