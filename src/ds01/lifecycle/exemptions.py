"""Admins' exemptions from the idle and runtime countdowns (issue 15 item 4): `ds01 admin exempt
USER --from idle|runtime --until DATE --reason TEXT`, ending on its own at DATE or by `ds01 admin
unexempt`. Each is an audit event (kind admin). The lifecycle passes read the exemptions in
force (lifecycle/reclaim.py): an idle exemption holds the idle countdown off like a keep-alive
of every allocation of the user; a runtime exemption suspends the runtime countdown, and when
it ends a container past its max_runtime gets its last warning and warn_before, then the stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from ds01.errors import NotFound, UsageError
from ds01.identity import Caller
from ds01.model.activity import Countdown, Exemption
from ds01.services.allocation import AllocationService
from ds01.store import activity as store
from ds01.store import events
from ds01.timetext import clock
from ds01.units import parse_duration

MAX_REASON = 500
WHAT = "exempting users from idle and runtime limits"


def parse_until(until: str | None, duration: str | None, now: float) -> float:
    """The end of an exemption: a date or time (ISO, local time unless it says otherwise) or a
    length from now (config durations); exactly one."""
    if (until is None) == (duration is None):
        raise UsageError(
            "give exactly one of --until DATE or --for DURATION",
            fix="For example: --until 2026-12-20, --until '2026-12-20 18:00' or --for 3d.",
        )
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as err:
            raise UsageError(f"--for {duration!r}: {err}", fix="Give a length like 3d.") from None
        end = now + seconds
    else:
        assert until is not None
        try:
            end = datetime.fromisoformat(until.strip()).timestamp()
        except ValueError:
            raise UsageError(
                f"--until {until!r} is not a date",
                fix="Give a date like 2026-12-20 or a time like '2026-12-20 18:00'.",
            ) from None
    if end <= now:
        raise UsageError(
            f"the exemption would end at {clock(end, now)}, which has passed",
            fix="Give a later date, or end an exemption with: ds01 admin unexempt USER.",
        )
    return end


class Exemptions:
    def __init__(self, allocations: AllocationService, clock: Callable[[], float] = time.time):
        self.allocations = allocations
        self.db = allocations.db
        self._clock = clock

    def exempt(
        self,
        caller: Caller,
        user: str,
        countdown: Countdown,
        until: str | None,
        duration: str | None,
        reason: str,
    ) -> Exemption:
        self.allocations.require_admin(caller, WHAT)
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise UsageError(
                f"--reason must be 1-{MAX_REASON} characters", fix="Say why; it is audited."
            )
        if not user.strip():
            raise UsageError("the user name is empty", fix="Give the user's login name.")
        with self.db.transaction() as conn:
            # The time is read inside the transaction, so that it and the stored times are in
            # one frame even when this waited for a clock step's (services/clock.py).
            now = self._clock()
            end = parse_until(until, duration, now)
            e = store.add_exemption(conn, user, countdown, end, reason, caller.name, now)
            events.record(
                conn,
                kind="admin",
                action="exempt",
                reason=f"{countdown.value}_exemption",
                actor=caller.name,
                user=user,
                message=f"{user} exempt from the {countdown.value} limit until "
                f"{clock(end, now)}: {reason}",
                details={"countdown": countdown.value, "until": end, "exemption_id": e.id},
                ts=now,
            )
        return e

    def end(self, caller: Caller, user: str, countdown: Countdown, reason: str) -> Exemption:
        self.allocations.require_admin(caller, WHAT)
        with self.db.transaction() as conn:
            now = self._clock()
            e = store.end_exemption(conn, user, countdown, caller.name, now)
            if e is None:
                raise NotFound(
                    f"{user} has no exemption from the {countdown.value} limit",
                    fix="See 'ds01 admin exemptions'.",
                )
            events.record(
                conn,
                kind="admin",
                action="unexempt",
                reason=f"{countdown.value}_exemption",
                actor=caller.name,
                user=user,
                message=f"{user}'s exemption from the {countdown.value} limit ended: {reason}",
                details={"countdown": countdown.value, "exemption_id": e.id},
                ts=now,
            )
        return e

    def listing(self, caller: Caller) -> list[Exemption]:
        self.allocations.require_admin(caller, "listing exemptions")
        return self.live()

    def live(self) -> list[Exemption]:
        with self.db.transaction(immediate=False) as conn:
            return store.live_exemptions(conn, self._clock())

    def ends(self) -> dict[tuple[str, Countdown], float]:
        """For the lifecycle passes: until when each (user, countdown) is or was exempt (an
        end in the past still matters: store/activity.py exemption_ends)."""
        with self.db.transaction(immediate=False) as conn:
            return store.exemption_ends(conn)
