"""Resolved per-user limits (defaults ← group ← user, BRIEF §4). Durations in seconds,
sizes in bytes; None means "no limit"."""

from __future__ import annotations

from dataclasses import dataclass

from ds01.model.gpueq import GpuEq

# Seconds a container is given to exit after SIGTERM when stopped (`docker stop -t`); SIGKILL
# follows. The same for `stop`, `restart` and a stop after a release; `ds01 container stop` says it.
STOP_GRACE_S = 10
SIGKILL_EXIT = 128 + 9  # a container's exit code when SIGKILL ended it


@dataclass(frozen=True)
class Limits:
    max_gpueq: GpuEq
    max_units_per_container: int
    max_containers: int
    allow_full_gpu: bool
    cpus: float | None = None
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None
    shm_bytes: int | None = None
    pids: int | None = None
    max_runtime_s: int | None = None
    idle_timeout_s: int | None = None
    gpu_hold_after_stop_s: int = 0
    group: str | None = None
    group_max_gpueq: GpuEq | None = None  # aggregate cap over all members of `group`
