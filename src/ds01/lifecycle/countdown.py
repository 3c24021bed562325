"""The idle and runtime countdowns of one active allocation (issue 15, items 2 and 3). Pure:
every function takes the record, the limits and `now`, and returns what to do; nothing here
reads a clock, the database or the machine.

- Idle run: each new sample extends it (idle) or ends it (active or unknown). After
  `policy.idle_samples` idle samples in a row the allocation is idle, counted from the first of
  them (`idle_since`); its stop falls due at idle_since + idle_timeout.
- Runtime: the stop falls due at the allocation's start + max_runtime.
- Warnings (stages) before each stop: at 50 % and 80 % of the timeout and `warn_before` before
  the stop (WARN_FRACTIONS; stages at the same moment are one). A stage is dealt with once: when
  several fall due in one pass (a late pass, a restarted ds01d) only the latest is sent, the
  others are recorded as skipped.
- The stop never comes unannounced: it waits until the last stage was sent, and a last stage
  sent more than LATE_S after its time (ds01d was down then) moves the stop to keep the notice
  that stage promises (deadline - its time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ds01.model.activity import ActivityRecord, Countdown, Verdict, WarningRecord

WARN_FRACTIONS: tuple[tuple[str, float], ...] = (("50%", 0.5), ("80%", 0.8))
WARN_BEFORE_STAGE = "warn_before"
RECENT_VERDICTS = 32  # verdicts kept per allocation (the bounded activity record)
LATE_S = 30.0  # a last warning sent this long after its time keeps its full notice


@dataclass(frozen=True)
class Stage:
    name: str  # '50%', '80%', 'warn_before'
    at: float  # when it falls due


@dataclass(frozen=True)
class Warn:
    countdown: Countdown
    stage: Stage
    deadline: float  # the stop it announces
    start: float  # idle_since, or the runtime's start
    timeout_s: int
    skipped: tuple[str, ...]  # earlier stages that fell due with it and are not sent
    last: bool  # the last stage before the stop


@dataclass(frozen=True)
class Stop:
    countdown: Countdown
    deadline: float
    start: float
    timeout_s: int


Action = Warn | Stop


def observe(
    rec: ActivityRecord, active: bool | None, signal: str, sample_at: float, now: float
) -> ActivityRecord:
    """The record after one new sample (taken at sample_at, seen at now). A sample already
    judged (sample_at not after last_sample) changes nothing."""
    if rec.last_sample is not None and sample_at <= rec.last_sample:
        return rec
    recent = (*rec.recent, Verdict(now, active, signal))[-RECENT_VERDICTS:]
    if active is False:
        since = rec.idle_since if rec.idle_since is not None else now
        return replace(
            rec, idle_run=rec.idle_run + 1, idle_since=since, last_sample=sample_at, recent=recent
        )
    return replace(rec, idle_run=0, idle_since=None, last_sample=sample_at, recent=recent)


def stages(start: float, timeout_s: int, warn_before_s: int) -> list[Stage]:
    """The warning stages of a countdown from `start`, in time order, one per moment."""
    found = [Stage(name, start + fraction * timeout_s) for name, fraction in WARN_FRACTIONS]
    if warn_before_s > 0:
        found.append(Stage(WARN_BEFORE_STAGE, start + max(0, timeout_s - warn_before_s)))
    found.sort(key=lambda s: s.at)
    out: list[Stage] = []
    for s in found:
        if out and out[-1].at == s.at:
            out[-1] = s  # one warning per moment
        else:
            out.append(s)
    return out


def idle_start(
    rec: ActivityRecord, idle_samples: int, keep_until: float | None = None
) -> float | None:
    """When the idle countdown started, or None while the allocation is not idle. A
    keep-alive holds it off: the countdown starts when the keep-alive ends at the earliest."""
    if rec.idle_run < idle_samples or rec.idle_since is None:
        return None
    return rec.idle_since if keep_until is None else max(rec.idle_since, keep_until)


def keepalive_bound(
    now: float, idle_since: float | None, max_keepalive_s: int, max_total_s: int
) -> float:
    """The latest end a keep-alive asked for now may have: max_keepalive_s from now, and no
    more than max_total_s of idleness in a row held off, counted from idle_since — when the
    GPUs were last seen in use (now while they are in use). Renewing cannot push it further:
    only using the GPU starts a new allowance."""
    start = now if idle_since is None else min(idle_since, now)
    return min(now + max_keepalive_s, start + max_total_s)


def plan(
    rec: ActivityRecord,
    *,
    idle_timeout_s: int | None,
    max_runtime_s: int | None,
    idle_samples: int,
    warn_before_s: int,
    done: list[WarningRecord],
    now: float,
    keep_until: float | None = None,
    runtime_exempt_until: float | None = None,
) -> list[Action]:
    """What to do now: the warnings due (one per countdown at most), and at most one stop (the
    earlier of the two, when both are due). No stop in a pass that sends that countdown's last
    warning."""
    actions: list[Action] = []
    stops: list[Stop] = []
    running = _running(
        rec, idle_timeout_s, max_runtime_s, idle_samples, keep_until, runtime_exempt_until, now
    )
    for countdown, start, timeout_s in running:
        mine = {w.stage: w for w in done if w.countdown is countdown}
        todo = stages(start, timeout_s, warn_before_s)
        deadline = start + timeout_s
        final = todo[-1]
        due = [s for s in todo if s.at <= now and s.name not in mine]
        if due:
            stage = due[-1]
            announced = deadline
            # Late: ds01d was down, or an exemption kept the countdown from warning in time.
            held = countdown is Countdown.RUNTIME and runtime_exempt_until is not None
            late = now - stage.at > LATE_S or (held and stage.at < (runtime_exempt_until or 0))
            if stage == final and late:
                announced = max(deadline, now + (deadline - stage.at))
            actions.append(
                Warn(
                    countdown,
                    stage,
                    announced,
                    start,
                    timeout_s,
                    tuple(s.name for s in due[:-1]),
                    stage == final,
                )
            )
            continue
        last = mine.get(final.name)
        if last is not None and now >= last.deadline:
            stops.append(Stop(countdown, last.deadline, start, timeout_s))
    if stops:
        actions.append(min(stops, key=lambda s: s.deadline))
    return actions


@dataclass(frozen=True)
class Outlook:
    """What a user is shown of an allocation's countdowns (`ds01 container list`): since when it
    is idle (None: in use, or not yet idle for idle_samples samples), and the stop to come
    first, if any, with its time — the deadline the last warning announced when one was sent."""

    idle_since: float | None
    next_stop: Countdown | None
    stop_at: float | None
    kept_until: float | None = None  # a keep-alive holds off the idle countdown until then


def outlook(
    rec: ActivityRecord,
    *,
    idle_timeout_s: int | None,
    max_runtime_s: int | None,
    idle_samples: int,
    warn_before_s: int,
    done: list[WarningRecord],
    now: float,
    keep_until: float | None = None,
    runtime_exempt_until: float | None = None,
) -> Outlook:
    kept = keep_until if keep_until is not None and keep_until > now else None
    stops: list[tuple[float, Countdown]] = []
    running = _running(
        rec, idle_timeout_s, max_runtime_s, idle_samples, keep_until, runtime_exempt_until, now
    )
    for countdown, start, timeout_s in running:
        final = stages(start, timeout_s, warn_before_s)[-1]
        sent = [w for w in done if w.countdown is countdown and w.stage == final.name]
        stops.append((sent[-1].deadline if sent else start + timeout_s, countdown))
    idle_since = idle_start(rec, idle_samples)
    if not stops:
        return Outlook(idle_since, None, None, kept)
    at, countdown = min(stops, key=lambda s: s[0])
    return Outlook(idle_since, countdown, at, kept)


def _running(
    rec: ActivityRecord,
    idle_timeout_s: int | None,
    max_runtime_s: int | None,
    idle_samples: int,
    keep_until: float | None,
    runtime_exempt_until: float | None,
    now: float,
) -> list[tuple[Countdown, float, int]]:
    """The countdowns running now, each with its start and length: idle once idle_samples
    idle samples came in (from the end of a keep-alive or idle exemption at the earliest),
    runtime unless an admin's exemption suspends it now."""
    out = []
    idle_from = idle_start(rec, idle_samples, keep_until)
    if idle_from is not None and idle_timeout_s is not None:
        out.append((Countdown.IDLE, idle_from, idle_timeout_s))
    exempt = runtime_exempt_until is not None and runtime_exempt_until > now
    if max_runtime_s is not None and not exempt:
        out.append((Countdown.RUNTIME, rec.runtime_from, max_runtime_s))
    return out


def demand_idle_timeout(
    timeout_s: int | None,
    policy_factor: float,
    floor_s: int,
    window_s: int,
    refused_at: float | None,
    now: float,
) -> int | None:
    """The idle timeout while others wait (issue 15 item 5): when a GPU request was refused
    for lack of capacity within window_s, policy_factor of it, never below floor_s nor above
    itself; else the timeout as configured."""
    if timeout_s is None or refused_at is None or now - refused_at > window_s:
        return timeout_s
    return min(timeout_s, max(floor_s, round(timeout_s * policy_factor)))
