"""Resource limits on containers made through the gate: the caller's ds01 limits (defaults ←
group ← user, fitted to the host like `ds01 container deploy`) are caps, and fill in what the
request leaves unset. Asking for more than the cap is refused, not silently lowered: the user
should know what they got.

Keys (HostConfig / update body): NanoCpus or CpuQuota/CpuPeriod ↔ cpus, Memory ↔ memory,
MemorySwap ↔ memory_swap (memory + swap, like runtime/stamp.py: equal to Memory = no swap),
ShmSize ↔ shm, PidsLimit ↔ pids.
"""

from __future__ import annotations

from typing import Any

from ds01.gate.policy.jsonbody import as_int
from ds01.gate.refusal import GateRefusal
from ds01.model.limits import Limits
from ds01.runtime.stamp import effective_cpus, swap_allowed


def size_text(n: int) -> str:
    """Bytes as the docker CLI's size flags write them: 64m, 2g, or bytes."""
    for unit, scale in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n} bytes"


def _refuse(rule: str, what: str, key: str, value: object) -> GateRefusal:
    return GateRefusal(rule, what, summary=f"{key}={value}")


def check_caps(
    hc: dict[str, Any], limits: Limits, *, rule: str = "create.limit", partial: bool = False
) -> None:
    """Refuse values above the caller's limits. partial=True (update): only keys present."""
    for key in ("CpuQuota", "CpuPeriod", "NanoCpus"):
        if as_int(hc.get(key), key) < 0:
            # --cpu-quota -1 means "no quota": next to NanoCpus it lifts the CPU limit.
            raise _refuse(rule, f"a negative {key} (no CPU limit) was refused", key, hc.get(key))
    cpus = effective_cpus(hc)
    if limits.cpus is not None and cpus is not None and cpus > limits.cpus + 1e-9:
        raise _refuse(
            rule, f"--cpus {cpus:g} is above your limit of {limits.cpus:g} CPUs", "cpus", cpus
        )
    memory = as_int(hc.get("Memory"), "Memory")
    if limits.memory_bytes is not None:
        if memory > limits.memory_bytes:
            raise _refuse(
                rule,
                f"--memory {size_text(memory)} is above your limit of "
                f"{size_text(limits.memory_bytes)}",
                "Memory",
                memory,
            )
        swap = as_int(hc.get("MemorySwap"), "MemorySwap")
        if "MemorySwap" in hc or not partial:
            allowed = swap_allowed(memory or limits.memory_bytes, limits)
            if swap < 0 or swap > allowed:
                raise _refuse(
                    rule,
                    f"--memory-swap {'unlimited' if swap < 0 else size_text(swap)} is above your "
                    f"limit of {size_text(allowed)} (memory + swap)",
                    "MemorySwap",
                    swap,
                )
    shm = as_int(hc.get("ShmSize"), "ShmSize")
    if limits.shm_bytes is not None and shm > limits.shm_bytes:
        raise _refuse(
            rule,
            f"--shm-size {size_text(shm)} is above your limit of {size_text(limits.shm_bytes)}",
            "ShmSize",
            shm,
        )
    pids = hc.get("PidsLimit")
    if limits.pids is not None and pids is not None:
        n = as_int(pids, "PidsLimit")
        if (n <= 0 and ("PidsLimit" in hc and partial)) or n > limits.pids:
            raise _refuse(
                rule,
                f"--pids-limit {'unlimited' if n <= 0 else n} is above your limit of {limits.pids}",
                "PidsLimit",
                n,
            )
