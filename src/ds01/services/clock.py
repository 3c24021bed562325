"""Wall-clock steps (issue 10 §8): deadlines keep their remaining time when the clock jumps.

ds01 stores its deadlines — reservation expiry, the end of a hold, the end of a grant — as
absolute wall-clock times, so they survive a restart of ds01d. A *step* of the wall clock (an
admin's `date -s`, NTP correcting a clock that was far off, a VM restored from a snapshot) would
then end them early (forward) or keep them too long (backward). ds01d watches for steps by
comparing how far the wall clock moved with how far a steady clock moved — CLOCK_BOOTTIME,
which never steps and, unlike CLOCK_MONOTONIC, counts time suspended, so a suspend is time
passed and not a step. When the two disagree by STEP_THRESHOLD_S or more, the step is logged
(WARNING) and, in one transaction, every live deadline is moved by it and one audit event
(`daemon/clock_step`) is recorded: each deadline keeps the time it had left.

Between a step and the pass that applies it (the next host-access tick, within a second),
`ClockWatch.now()` answers in the frame of the stored deadlines — the wall clock less the step
not yet applied — so nothing that reads the clock (expiry, a request writing a new deadline)
acts on a stepped clock. A pass that reads and writes stored times over several transactions
(the lifecycle's countdowns) holds the frame (`ClockWatch.held`): no step is applied while it
runs. Slow NTP slewing moves both clocks alike and is never a step; a step
while ds01d is not running cannot be seen (there is no steady reference across restarts).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ds01.store import activity as activity_store
from ds01.store import allocations as allocs
from ds01.store import events
from ds01.store import grants as grants_store
from ds01.store.db import Database

log = logging.getLogger("ds01d.clock")

STEP_THRESHOLD_S = 2.0
DAEMON = "ds01d"


def steady_time() -> float:
    """Seconds on a clock that never steps: CLOCK_BOOTTIME (Linux), else CLOCK_MONOTONIC."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic()
    return time.clock_gettime(boottime)


@dataclass(frozen=True)
class ClockStep:
    step_s: float  # > 0: the wall clock jumped forward; < 0: backward
    wall: float  # the wall clock after the step, when it was seen


@dataclass(frozen=True)
class _Reference:
    wall: float
    steady: float


class StepDetector:
    """Pure: compares the wall clock's progress with the steady clock's since a reference pair
    of readings. `rebase` moves the reference; the caller does after every check (so slewing
    never adds up to a step) and once a step has been applied."""

    def __init__(self, wall: float, steady: float, threshold_s: float = STEP_THRESHOLD_S) -> None:
        self.threshold_s = threshold_s
        self._ref = _Reference(wall, steady)

    def drift(self, wall: float, steady: float) -> float:
        """How much further the wall clock moved than the steady clock since the reference."""
        return (wall - self._ref.wall) - (steady - self._ref.steady)

    def step(self, wall: float, steady: float) -> ClockStep | None:
        drift = self.drift(wall, steady)
        return ClockStep(drift, wall) if abs(drift) >= self.threshold_s else None

    def frame_time(self, wall: float, steady: float) -> float:
        """The wall time in the reference's frame: the wall clock less a step not yet rebased."""
        step = self.step(wall, steady)
        return wall if step is None else wall - step.step_s

    def rebase(self, wall: float, steady: float) -> None:
        self._ref = _Reference(wall, steady)

    @property
    def reference(self) -> tuple[float, float]:
        return (self._ref.wall, self._ref.steady)

    @reference.setter
    def reference(self, ref: tuple[float, float]) -> None:
        self._ref = _Reference(*ref)


def describe_step(step_s: float) -> str:
    """'forward by 2h 0m 0s' / 'backward by 5m 3s' / 'forward by 2.5s'."""
    way = "forward" if step_s > 0 else "backward"
    left = abs(step_s)
    if left < 60:
        return f"{way} by {left:.1f}s"
    h, rest = divmod(round(left), 3600)
    m, s = divmod(rest, 60)
    return f"{way} by " + (f"{h}h {m}m {s}s" if h else f"{m}m {s}s")


class ClockWatch:
    """The daemon's clock: `now()` for every service, `check()` once a tick to apply steps.

    `on_step` callbacks move deadlines kept in memory (a grant cache, a pending SIGKILL); they
    run after the stored deadlines moved, in the thread that called check().
    """

    def __init__(
        self,
        db: Database,
        *,
        wall: Callable[[], float] = time.time,
        steady: Callable[[], float] = steady_time,
        threshold_s: float = STEP_THRESHOLD_S,
    ) -> None:
        self.db = db
        self._wall = wall
        self._steady = steady
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a step's application has ended
        self._detector = StepDetector(wall(), steady(), threshold_s)
        self._holds = 0  # passes running in the current frame (held)
        self._applying = False  # a step is being applied (check)
        self.on_step: list[Callable[[float], None]] = []

    def now(self) -> float:
        """Wall-clock time in the frame of the stored deadlines."""
        with self._lock:
            return self._detector.frame_time(self._wall(), self._steady())

    @contextlib.contextmanager
    def held(self) -> Iterator[float]:
        """The time, for a pass that compares it with stored times over several transactions
        (the lifecycle's idle and runtime countdowns): no step is applied until the pass ends,
        so everything it reads and writes is in the frame of the time it got. A step being
        applied when the pass begins is waited for, so the pass starts in the new frame with
        the moved times committed. A step seen meanwhile is applied by the next check()."""
        with self._changed:
            while self._applying:
                self._changed.wait()
            self._holds += 1
            now = self._detector.frame_time(self._wall(), self._steady())
        try:
            yield now
        finally:
            with self._lock:
                self._holds -= 1

    def _pending(self) -> tuple[ClockStep | None, float, float]:
        """A step since the reference, with the readings it was measured on. No step: the
        reference moves up to these readings (so slewing never adds up to a step)."""
        wall, steady = self._wall(), self._steady()
        step = self._detector.step(wall, steady)
        if step is None:
            self._detector.rebase(wall, steady)
        return step, wall, steady

    def check(self) -> ClockStep | None:
        """Apply a wall-clock step, if there was one since the last check; returns it."""
        with self._lock:
            if self._pending()[0] is None:
                return None
            if self._holds:
                return None  # a pass runs in the current frame: applied after it (next check)
            self._applying = True
        try:
            return self._apply()
        finally:
            with self._changed:
                self._applying = False
                self._changed.notify_all()

    def _apply(self) -> ClockStep | None:
        before: tuple[float, float] | None = None
        try:
            with self.db.transaction() as conn:
                # Measured again under the database's lock: no other transaction runs until
                # this one commits, so a writer that reads the clock from here on (the new
                # frame) writes after the move. The allocation service reads the clock inside
                # its transactions for that reason: a time read before waiting for this one
                # would be in the old frame and compared with moved deadlines.
                with self._lock:
                    before = self._detector.reference
                    step, wall, steady = self._pending()
                    if step is None:  # stepped back again, to where it was
                        return None
                    self._detector.rebase(wall, steady)  # now() answers in the new frame
                moved_allocs = allocs.shift_deadlines(conn, step.step_s)
                moved_grants = grants_store.shift_live(conn, step.step_s)
                activity_store.shift(conn, step.step_s)  # idle and runtime countdowns
                message = (
                    f"the wall clock jumped {describe_step(step.step_s)}; {moved_allocs}"
                    f" allocation deadline(s) and {moved_grants} grant(s) moved with it and"
                    " keep the time they had left"
                )
                events.record(
                    conn,
                    kind="daemon",
                    action="clock_step",
                    reason="clock_step",
                    actor=DAEMON,
                    message=message,
                    details={
                        "step_s": round(step.step_s, 3),
                        "allocations": moved_allocs,
                        "grants": moved_grants,
                    },
                    ts=step.wall,
                )
        except BaseException:
            if before is not None:
                with self._lock:
                    self._detector.reference = before  # not applied: the next check retries
            raise
        for moved in self.on_step:
            moved(step.step_s)
        log.warning("clock step: %s", message)
        return step
