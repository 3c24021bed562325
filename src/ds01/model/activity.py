"""What ds01d remembers about each active allocation's use, for idle reclaim and max runtime
(issue 15; the decisions are lifecycle/countdown.py, the table store/activity.py).

Times are wall-clock seconds (the daemon's clock watch frame), so a restart of ds01d resumes
every countdown where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Countdown(StrEnum):
    """The two clocks that end a container's run: idleness and its maximum runtime."""

    IDLE = "idle"
    RUNTIME = "runtime"


# The reason a stop is recorded with (events, the allocation's hold) and shown to users.
STOP_REASON = {Countdown.IDLE: "idle_timeout", Countdown.RUNTIME: "max_runtime"}


@dataclass(frozen=True)
class Verdict:
    """One sample's judgement of an allocation: active (True), idle (False), or unknown (None:
    a unit missing from the sample), and the signal that decided it (lifecycle/activity.py)."""

    ts: float
    active: bool | None
    signal: str


@dataclass(frozen=True)
class ActivityRecord:
    """One active allocation's idle run and runtime start.

    active_since: the activation this record follows (the allocation's updated_at when it went
    active); a new activation starts a new idle run. runtime_from: when max_runtime started
    counting (the allocation's creation). idle_run: consecutive idle samples; idle_since: when
    the first of them was taken (None while not idle). last_sample: the taken_at of the sample
    judged last, so one sample is never counted twice. recent: the newest verdicts, bounded
    (countdown.RECENT_VERDICTS), oldest first.
    """

    allocation_id: int
    active_since: float
    runtime_from: float
    idle_run: int = 0
    idle_since: float | None = None
    last_sample: float | None = None
    recent: tuple[Verdict, ...] = ()


@dataclass(frozen=True)
class WarningRecord:
    """A warning stage of one countdown that was dealt with: sent, or (sent False) skipped
    because a later stage fell due in the same pass. deadline: the stop time it announced."""

    allocation_id: int
    countdown: Countdown
    stage: str
    deadline: float
    done_at: float
    sent: bool


@dataclass(frozen=True)
class Exemption:
    """An admin's exemption of a user's allocations from one countdown, until a time."""

    id: int
    user: str
    countdown: Countdown
    until: float
    reason: str
    created_by: str
    created_at: float
