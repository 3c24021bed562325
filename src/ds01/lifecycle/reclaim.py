"""The lifecycle's acting part (issue 15, items 1-3 and 7): on each new machine sample, judge
every active GPU allocation (lifecycle/activity.py), move its idle and runtime countdowns
(lifecycle/countdown.py), send the warnings that fell due and stop the containers whose time
is up.

Owns the order of the effects: a warning is delivered (services never raise for a dead
channel), then recorded with its audit event; a stop is announced as an event before ds01d
acts, and goes through ContainerService.stop_by_daemon — `docker stop` of the allocation's own
container (SIGTERM, SIGKILL after STOP_GRACE_S), then the allocation is held for
gpu_hold_after_stop and released by the hold's expiry. The container and its files are kept.

Must not: signal a process, reset a GPU, act on a container ds01 did not make for the
allocation's owner, or touch an allocation that is not active. A stop runs in its own thread so
that a slow container never delays the warnings and stops of others. While the latest sample
is stale (the sampler failing), nothing is judged, warned or stopped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from ds01 import faults
from ds01.config import ResolvedLimits
from ds01.errors import Ds01Error, Refusal, RefusalReason, StateError, UsageError
from ds01.identity import Caller, CallerCache
from ds01.lifecycle import countdown, messages
from ds01.lifecycle.activity import (
    UnitActivity,
    allocation_activity,
    container_activity,
    unit_activity,
)
from ds01.lifecycle.cpu import ContainerCpu
from ds01.lifecycle.exemptions import Exemptions
from ds01.model.activity import STOP_REASON, Countdown, WarningRecord
from ds01.model.allocation import AllocState
from ds01.model.inventory import MachineSample
from ds01.notify import Notifier
from ds01.services.activitybook import ActivityBook
from ds01.services.allocation import AllocationService
from ds01.services.containers import ContainerService, ContainerView
from ds01.store.allocations import AllocationRow
from ds01.timetext import clock
from ds01.units import format_duration, parse_duration

log = logging.getLogger("ds01d.lifecycle")

# (warning action, stop reason) per countdown, as `ds01 events` shows them.
ACTION = {Countdown.IDLE: "idle_warning", Countdown.RUNTIME: "runtime_warning"}
REASON = STOP_REASON


class Reclaimer:
    def __init__(
        self,
        allocations: AllocationService,
        containers: ContainerService,
        notifier: Notifier,
        sample: Callable[[], MachineSample | None],
        clock: Callable[[], float] = time.time,
        max_age: Callable[[], float] = lambda: 60.0,
        cpu: ContainerCpu | None = None,
        callers: CallerCache | None = None,
        held: Callable[[], AbstractContextManager[float]] | None = None,
    ) -> None:
        """held: the time for a pass, with no clock step applied until the pass ends
        (ClockWatch.held); by default just `clock()`."""
        self.allocations = allocations
        self.containers = containers
        self.book = ActivityBook(allocations.db)
        self.exemptions = Exemptions(allocations, clock)
        self.notifier = notifier
        self._sample = sample
        self._clock = clock
        self._held = held or (lambda: contextlib.nullcontext(clock()))
        self._max_age = max_age  # older samples are stale: nothing is judged or done on them
        # The containers' CPU use, read once per pass (lifecycle/cpu.py: cgroup files).
        self.cpu = cpu if cpu is not None else ContainerCpu(containers.main_pid)
        # Owners' groups from NSS at most once per user per CALLER_TTL_S, not per allocation
        # per pass; their limits resolved once per config and groups (limits_for).
        self.callers = callers if callers is not None else CallerCache()
        self.stale = False
        self._lock = threading.Lock()
        self._stopping: set[int] = set()  # allocations whose stop is under way
        self._failed: dict[int, str] = {}  # allocation → the last stop failure recorded

    def outlooks(self, rows: list[AllocationRow]) -> dict[int, countdown.Outlook]:
        """Each active allocation's countdowns as its owner is shown them (idle since, the
        next stop and when), from the records the passes keep; none for an allocation not yet
        judged, nor for one whose record belongs to an earlier activation."""
        active = [r for r in rows if r.state is AllocState.ACTIVE and r.units]
        records = self.book.read([r.id for r in active])
        exempt = self.exemptions.ends() if active else {}
        refused_at = self.book.last_capacity_refusal() if active else None
        now = self._clock()
        limits: dict[str, ResolvedLimits] = {}
        out: dict[int, countdown.Outlook] = {}
        for row in active:
            seen = records.get(row.id)
            if seen is None or seen.record.active_since != row.updated_at:
                continue
            if row.user not in limits:
                limits[row.user] = self._limits(row.user)
            resolved = limits[row.user]
            out[row.id] = countdown.outlook(
                seen.record,
                idle_timeout_s=_idle_timeout(resolved, refused_at, now),
                max_runtime_s=resolved.limits.max_runtime_s,
                idle_samples=resolved.policy.idle_samples,
                warn_before_s=resolved.policy.warn_before_s,
                done=seen.warnings,
                now=now,
                keep_until=_later(seen.keep_until, exempt.get((row.user, Countdown.IDLE))),
                runtime_exempt_until=exempt.get((row.user, Countdown.RUNTIME)),
            )
        return out

    def _limits(self, user: str) -> ResolvedLimits:
        return self.allocations.limits_for(self.callers.of_name(user))

    def keep_alive(self, caller: Caller, view: ContainerView, duration: str) -> None:
        """`ds01 container keep-alive NAME --for DURATION`: hold off the idle stop of the
        caller's own container for DURATION from now, at most policy.max_keepalive; asked
        again, it starts again from now, but keep-alives never hold off more than
        policy.max_keepalive_total of idleness in a row (countdown.keepalive_bound): renewing
        by a timer cannot keep an idle GPU forever, using the GPU starts a new allowance.
        The runtime limit is not touched. Audited (container/keep_alive)."""
        name = view.info.short_name or view.info.name
        row = view.allocation
        if row is None or row.state is not AllocState.ACTIVE or not row.units:
            raise StateError(
                f"'{name}' has no GPUs in use: there is no idle stop to hold off",
                why="Only a running container with GPUs is stopped for idleness.",
                fix=f"See 'ds01 container list'; start it with: ds01 container start {name}.",
            )
        try:
            seconds = parse_duration(duration)
        except ValueError as err:
            raise UsageError(f"--for {duration!r}: {err}", fix="Give a length like 6h.") from None
        most = self.allocations.limits_for(caller).policy.max_keepalive_s
        if seconds <= 0 or seconds > most:
            raise Refusal(
                RefusalReason.POLICY,
                f"a keep-alive of {format_duration(seconds)} is not allowed"
                if most
                else "keep-alive is turned off for you",
                why=f"Your limit is {format_duration(most)} (policy.max_keepalive)."
                if most
                else "policy.max_keepalive is 0 in your limits.",
                fix=f"Ask for at most {format_duration(most)} (and again when it ends), or "
                "ask an admin."
                if most
                else "Ask an admin.",
            )
        total = self.allocations.limits_for(caller).policy.max_keepalive_total_s
        with self._held() as now:  # the idle run's start is read and the end written in one frame
            seen = self.book.read([row.id]).get(row.id)
            idle_since = (
                seen.record.idle_since
                if seen is not None and seen.record.active_since == row.updated_at
                else None
            )
            bound = countdown.keepalive_bound(now, idle_since, most, total)
            if now + seconds > bound:
                raise _over_total(name, seconds, bound, idle_since, total, now)
            self.book.keep_alive(row, now + seconds, caller.name, now)
        log.info("allocation %d (%s): kept alive for %d s", row.id, row.user, seconds)

    def tick(self) -> None:
        """One pass over the active allocations with the latest sample, all of it in one clock
        frame: the time is read once, and a wall-clock step is applied only after the pass
        (its stored times and this pass's time would otherwise be a step apart: a backward
        step would make every idle run look longer by it, and stop containers early)."""
        sample = self._sample()
        if sample is None or sample.taken_at is None:
            return
        sample_at = sample.taken_at.timestamp()
        with self._held() as now:
            self._pass(sample, sample_at, now)

    def _pass(self, sample: MachineSample, sample_at: float, now: float) -> None:
        stale = now - sample_at > self._max_age()
        if stale != self.stale:
            self.stale = stale
            if stale:
                log.error(
                    "lifecycle paused: the latest GPU sample is from %.0f s ago", now - sample_at
                )
            else:
                log.info("lifecycle resumed: GPU samples are fresh again")
        if stale:
            return  # the sampler is failing: no warning and no stop on what may be old news
        self.book.forget_inactive()
        by_threshold: dict[float, dict[str, UnitActivity]] = {}
        exempt = self.exemptions.ends()
        refused_at = self.book.last_capacity_refusal()
        rows = [
            r
            for r in self.allocations.all_live()
            # not reserved/held, and with a GPU (CPU-only containers are not reclaimed)
            if r.state is AllocState.ACTIVE and r.units and r.container_id is not None
        ]
        cpu = self.cpu.read(r.container_id for r in rows if r.container_id is not None)
        for row in rows:
            with self._lock:
                if row.id in self._stopping:
                    continue
            try:
                self._judge(row, sample, sample_at, now, by_threshold, exempt, refused_at, cpu)
            except Ds01Error as err:
                log.error("lifecycle: allocation %d: %s", row.id, " | ".join(err.lines()))

    def _judge(
        self,
        row: AllocationRow,
        sample: MachineSample,
        sample_at: float,
        now: float,
        by_threshold: dict[float, dict[str, UnitActivity]],
        exempt: dict[tuple[str, Countdown], float],
        refused_at: float | None,
        cpu: dict[str, float | None],
    ) -> None:
        resolved = self._limits(row.user)
        policy = resolved.policy
        threshold = policy.idle_gpu_util_pct
        if threshold not in by_threshold:
            by_threshold[threshold] = unit_activity(sample, threshold)
        verdict = allocation_activity(
            [u.uuid for u in row.units],
            by_threshold[threshold],
            container_activity(cpu.get(row.container_id or ""), policy.idle_cpu_pct),
        )
        seen = self.book.observe(
            row,
            lambda rec: countdown.observe(rec, verdict.active, verdict.signal, sample_at, now),
            now,
        )
        actions = countdown.plan(
            seen.record,
            idle_timeout_s=_idle_timeout(resolved, refused_at, now),
            max_runtime_s=resolved.limits.max_runtime_s,
            idle_samples=policy.idle_samples,
            warn_before_s=policy.warn_before_s,
            done=seen.warnings,
            now=now,
            keep_until=_later(seen.keep_until, exempt.get((row.user, Countdown.IDLE))),
            runtime_exempt_until=exempt.get((row.user, Countdown.RUNTIME)),
        )
        for action in actions:
            if isinstance(action, countdown.Warn):
                self._warn(row, action, resolved, verdict.signal, now, refused_at)
            else:
                self._stop(row, action, resolved, now)

    def _warn(
        self,
        row: AllocationRow,
        w: countdown.Warn,
        resolved: ResolvedLimits,
        signal: str,
        now: float,
        refused_at: float | None,
    ) -> None:
        units = ", ".join(u.title for u in row.units)
        hold_s = resolved.limits.gpu_hold_after_stop_s
        configured = resolved.limits.idle_timeout_s
        shortened = w.countdown is Countdown.IDLE and configured != w.timeout_s
        text = messages.warning(
            w,
            row.container,
            units,
            hold_s,
            now,
            demand=(configured, refused_at) if shortened and configured and refused_at else None,
        )
        delivery = self.notifier.notify(
            row.user,
            ACTION[w.countdown],
            text,
            allocation_id=row.id,
            container_id=row.container_id,
        )
        done = [
            WarningRecord(row.id, w.countdown, name, w.deadline, now, sent=False)
            for name in w.skipped
        ] + [WarningRecord(row.id, w.countdown, w.stage.name, w.deadline, now, sent=True)]
        self.book.warned(
            row,
            done,
            action=ACTION[w.countdown],
            reason=REASON[w.countdown],
            message=text,
            details={
                "stage": w.stage.name,
                "due": w.stage.at,
                "deadline": w.deadline,
                "start": w.start,
                "timeout_s": w.timeout_s,
                "skipped": list(w.skipped),
                "last": w.last,
                "signal": signal,
                "delivered": delivery.summary(),
                **({"configured_timeout_s": configured} if shortened else {}),
            },
            now=now,
        )
        log.info(
            "allocation %d (%s): %s warning %s, stop at %.0f",
            row.id,
            row.user,
            w.countdown.value,
            w.stage.name,
            w.deadline,
        )

    def _stop(
        self, row: AllocationRow, s: countdown.Stop, resolved: ResolvedLimits, now: float
    ) -> None:
        if row.container_id in self.containers.acting_on:
            return  # a user command is stopping, starting or retiring it right now
        reason = REASON[s.countdown]
        with self._lock:
            if row.id in self._stopping:
                return
            self._stopping.add(row.id)
        hold_s = resolved.limits.gpu_hold_after_stop_s
        try:
            self.book.record(
                row,
                action="stopping",
                reason=reason,
                message=f"stopping {row.container or row.container_id}: {reason}"
                f" (deadline {s.deadline:.0f})",
                details={"deadline": s.deadline, "start": s.start, "timeout_s": s.timeout_s},
                now=now,
            )
        except BaseException:
            with self._lock:
                self._stopping.discard(row.id)
            raise
        threading.Thread(
            target=self._stop_now,
            args=(row, s, hold_s),
            name=f"lifecycle-stop-{row.id}",
            daemon=True,
        ).start()

    def _stop_now(self, row: AllocationRow, s: countdown.Stop, hold_s: int) -> None:
        reason = REASON[s.countdown]
        try:
            faults.point("lifecycle_stop.announced")  # the 'stopping' event is written
            view = self.containers.stop_by_daemon(row, reason)
        except Exception as exc:
            why = " | ".join(exc.lines()) if isinstance(exc, Ds01Error) else repr(exc)
            log.error("lifecycle: stopping allocation %d failed: %s", row.id, why)
            if self._failed.get(row.id) != why:
                self._failed[row.id] = why
                try:
                    self.book.record(
                        row,
                        action="stop_failed",
                        reason=reason,
                        message=f"could not stop {row.container or row.container_id}: {why};"
                        " ds01d tries again on its next pass",
                        details={"error": why},
                        now=self._clock(),
                    )
                except Exception:
                    log.exception("lifecycle: recording a failed stop")
            return
        finally:
            with self._lock:
                self._stopping.discard(row.id)
        self._failed.pop(row.id, None)
        if view is None:
            log.info("lifecycle: allocation %d changed before its stop; left alone", row.id)
            return
        log.info("lifecycle: stopped %s of %s (%s)", view.info.name, row.user, reason)
        self.notifier.notify(
            row.user,
            reason,
            messages.stopped(s, row.container, hold_s, self._clock()),
            allocation_id=row.id,
            container_id=row.container_id,
        )


def _over_total(
    name: str, seconds: int, bound: float, idle_since: float | None, total: int, now: float
) -> Refusal:
    """The refusal of a keep-alive past policy.max_keepalive_total."""
    left = int(bound - now)
    rule = (
        f"hold off at most {format_duration(total)} of idleness in a row"
        " (policy.max_keepalive_total)."
    )
    why = (
        f"It has been idle since {clock(idle_since, now)}; keep-alives {rule}"
        if idle_since is not None
        else f"Keep-alives {rule}"
    )
    use = "use its GPU (any GPU work starts a new allowance)"
    if left <= 0:
        return Refusal(
            RefusalReason.POLICY,
            f"'{name}' cannot be kept alive any longer",
            why=why,
            fix=f"To keep it, {use}; or let it stop (ds01 container start {name} brings it "
            "back), or ask an admin for an exemption.",
        )
    return Refusal(
        RefusalReason.POLICY,
        f"a keep-alive of {format_duration(seconds)} is not allowed now",
        why=why,
        fix=f"Ask for at most {format_duration(left)}, or {use}.",
    )


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _idle_timeout(resolved: ResolvedLimits, refused_at: float | None, now: float) -> int | None:
    """The user's idle timeout now: shorter while GPU requests are refused for lack of
    capacity (countdown.demand_idle_timeout; policy.demand_*)."""
    p = resolved.policy
    return countdown.demand_idle_timeout(
        resolved.limits.idle_timeout_s,
        p.demand_idle_factor,
        p.demand_idle_floor_s,
        p.demand_window_s,
        refused_at,
        now,
    )
