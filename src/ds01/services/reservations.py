"""Admins' reservations (issue 16 item 5): `ds01 admin reserve UNITS --from T --to T --for
USER|group:GROUP --reason TEXT`, listed by `ds01 admin reservations`, ended early by `ds01 admin
unreserve ID`. Every change is an audit event (kind `admin`): reserve, unreserve,
reservation_used, reservation_expired (unused after its grace period: the units are back in the
pool), reservation_ended.

What a reservation keeps back from a request is scheduler/reservations.py's rule;
AllocationService.allocate asks verdict() inside its own transaction. tick() (ds01d's expiry
loop) records what time did: used, expired, ended; an expiry or an end wakes the queue's
dispatcher. Decisions never depend on tick() having run: verdict() judges by the clock.
"""

from __future__ import annotations

import grp
import pwd
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ds01.errors import NotFound, Refusal, RefusalReason, UsageError
from ds01.identity import Caller, unix_groups
from ds01.model.inventory import Unit
from ds01.scheduler.reservations import Verdict, Window, judge, overlaps
from ds01.store import events
from ds01.store import reservations as store
from ds01.store import units as units_store
from ds01.store.reservations import Reservation
from ds01.timetext import clock, parse_moment, span
from ds01.units import parse_duration

if TYPE_CHECKING:
    from ds01.services.allocation import AllocationService
    from ds01.store.allocations import AllocationRow

DAEMON = "ds01d"
MAX_REASON = 500
GROUP_PREFIX = "group:"
PAST_SLACK_S = 60.0  # a --from this much in the past is "now" (the command took a moment)
ENDED_SHOWN_S = 7 * 86400  # `ds01 admin reservations --all`: those ended in the last week


@dataclass(frozen=True)
class Created:
    reservation: Reservation
    # What the admin should know: units in use now whose allocation has no known end before
    # the window (they are not taken away from their holder).
    warnings: tuple[str, ...]


def window_of(r: Reservation) -> Window:
    return Window(
        id=r.id,
        units=frozenset(r.units),
        user=r.user,
        group=r.group,
        start=r.start,
        end=r.end,
        grace_s=r.grace_s,
        reason=r.reason,
        used=r.used_at is not None,
    )


def status_of(r: Reservation, now: float) -> str:
    """What a reservation is doing now: upcoming | waiting (window open, not used yet) | in_use
    | returned (unused past its grace, not yet recorded) | ended states as stored."""
    if r.state != "open":
        return r.state
    w = window_of(r)
    if now >= r.end:
        return "ended"
    if not w.in_force(now):
        return "expired"
    if now < r.start:
        return "upcoming"
    return "in_use" if w.used else "waiting"


class ReservationBook:
    def __init__(self, allocations: AllocationService, clock: Callable[[], float]) -> None:
        self.allocations = allocations
        self.db = allocations.db
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    # ---- decisions (inside AllocationService's transaction) ---------------------------

    def verdict(
        self,
        conn: sqlite3.Connection,
        user: str,
        groups: Iterable[str],
        now: float,
        latest_end: Callable[[], float | None],
    ) -> Verdict | None:
        """What the reservations in force keep from (or keep for) a request of `user` now;
        None when no reservation is in force (most decisions: one indexed read)."""
        windows = [w for w in map(window_of, store.open_ones(conn)) if w.in_force(now)]
        if not windows:
            return None
        # Only ask for the requester's latest end when a window has not begun yet.
        end = latest_end() if any(now < w.start for w in windows) else None
        return judge(windows, user, groups, now, end)

    def note_use(
        self,
        conn: sqlite3.Connection,
        user: str,
        groups: Iterable[str],
        units: Iterable[Unit],
        now: float,
        actor: str,
    ) -> None:
        """An allocation of `user` took `units` now: a reservation of theirs over one of them,
        with its window open, is used (it no longer returns after its grace period)."""
        uuids = {u.uuid for u in units}
        if not uuids:
            return
        gs = frozenset(groups)
        for r in store.open_ones(conn):
            w = window_of(r)
            if w.used or now < r.start or not w.in_force(now) or not (uuids & w.units):
                continue
            if w.is_for(user, gs) and store.mark_used(conn, r.id, now):
                events.record(
                    conn,
                    kind="admin",
                    action="reservation_used",
                    reason="allocation",
                    actor=actor,
                    user=r.user or user,
                    message=f"reservation {r.id} ({w.party}) in use by {user}",
                    details={"reservation": r.id},
                    ts=now,
                )

    def windows(self) -> list[Window]:
        """The reservations in force now (the queue's estimates and backfill)."""
        now = self._clock()
        with self.db.transaction(immediate=False) as conn:
            return [w for w in map(window_of, store.open_ones(conn)) if w.in_force(now)]

    # ---- admins' commands ------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        targets: Sequence[str],
        start: str,
        end: str,
        for_: str,
        reason: str,
        grace: str | None = None,
    ) -> Created:
        self.allocations.require_admin(caller, "reserving GPUs")
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise UsageError(
                f"--reason must be 1-{MAX_REASON} characters", fix="Say why; it is audited."
            )
        now = self._clock()
        t0 = _moment("--from", start, now, now)
        if t0 < now - PAST_SLACK_S:
            raise UsageError(
                f"--from {start!r} is {clock(t0, now)}, which has passed",
                fix="Give a later time, or --from now.",
            )
        t0 = max(t0, now)
        t1 = _moment("--to", end, now, t0)
        if t1 <= t0:
            raise UsageError(
                f"--to {end!r} ({clock(t1, now)}) is not after --from {start!r} ({clock(t0, now)})",
                fix="Give an end after the start, or a length: --to 4h (4 hours after --from).",
            )
        grace_s = float(self.allocations.config.reservations.grace)
        if grace is not None:
            try:
                grace_s = float(parse_duration(grace))
            except ValueError as err:
                raise UsageError(
                    f"--grace {grace!r}: {err}", fix="Give a length like 30m."
                ) from None
        # The units are checked before the party (an NSS lookup, slow to fail): the times,
        # then the units, then who — an error names the first wrong value, changing nothing.
        with self.db.transaction(immediate=False) as conn:
            _resolve(units_store.all_units(conn), targets)
        user, group = self._party(for_)
        with self.db.transaction() as conn:
            units = _resolve(units_store.all_units(conn), targets)
            uuids = tuple(u.uuid for u in units)
            for r in store.open_ones(conn):
                w = window_of(r)
                if not w.in_force(now) or not overlaps(t0, t1, r.start, r.end):
                    continue
                clash = [u for u in units if u.uuid in w.units]
                if clash:
                    raise Refusal(
                        RefusalReason.POLICY,
                        f"{_and([u.title for u in clash])} {'is' if len(clash) == 1 else 'are'}"
                        f" already {w.describe(now)}",
                        why="A unit can be reserved for one party at a time.",
                        fix=f"Pick other units or another time, or end that one first: "
                        f"ds01 admin unreserve {r.id}.",
                    )
            rid = store.add(
                conn,
                units=uuids,
                user=user,
                group=group,
                reason=reason,
                start=t0,
                end=t1,
                grace_s=grace_s,
                by=caller.name,
                now=now,
            )
            made = store.get(conn, rid)
            assert made is not None
            w = window_of(made)
            events.record(
                conn,
                kind="admin",
                action="reserve",
                reason="reservation",
                actor=caller.name,
                user=user,
                message=f"{_and([u.title for u in units])} {w.describe(now)}",
                details={
                    "reservation": rid,
                    "units": list(uuids),
                    "for_user": user,
                    "for_group": group,
                    "start": t0,
                    "end": t1,
                    "grace_s": grace_s,
                },
                ts=now,
            )
            view = self.allocations.live.view(conn)
        warnings = self._in_the_way(view.live.values(), w, now)
        return Created(made, warnings)

    def _in_the_way(self, live: Iterable[AllocationRow], w: Window, now: float) -> tuple[str, ...]:
        """Others' allocations on the units now: they keep them until they release them (a
        reservation takes nothing away)."""
        out: list[str] = []
        for a in live:
            mine = [u for u in a.units if u.uuid in w.units]
            if not mine or w.is_for(a.user, unix_groups(a.user) | {a.group or ""}):
                continue
            one = len(mine) == 1
            out.append(
                f"{_and([u.title for u in mine])} {'is' if one else 'are'} in use by {a.user}"
                f" ({a.container or f'allocation {a.id}'}, {a.state}): the reservation does not"
                f" take {'it' if one else 'them'} away; {'it is' if one else 'they are'} kept"
                f" for {w.party} once released. Ask {a.user}, or release it:"
                f" ds01 admin alloc release {a.id} --reason ..."
            )
        return tuple(out)

    def listing(self, caller: Caller, ended: bool = False) -> list[Reservation]:
        self.allocations.require_admin(caller, "listing reservations")
        now = self._clock()
        with self.db.transaction(immediate=False) as conn:
            if ended:
                return store.recent(conn, now - ENDED_SHOWN_S)
            return store.open_ones(conn)

    def cancel(self, caller: Caller, rid: int, reason: str) -> Reservation:
        self.allocations.require_admin(caller, "ending reservations")
        now = self._clock()
        with self.db.transaction() as conn:
            r = store.get(conn, rid)
            if r is None:
                raise NotFound(
                    f"reservation {rid} not found", fix="See them with 'ds01 admin reservations'."
                )
            if not store.end(conn, rid, "cancelled", caller.name, now):
                raise Refusal(
                    RefusalReason.POLICY,
                    f"reservation {rid} cannot be cancelled: it is {r.state}",
                    fix="See the open ones with 'ds01 admin reservations'.",
                )
            events.record(
                conn,
                kind="admin",
                action="unreserve",
                reason="reservation",
                actor=caller.name,
                user=r.user,
                message=f"reservation {rid} ({window_of(r).party}) cancelled: {reason}",
                details={"reservation": rid, "units": list(r.units)},
                ts=now,
            )
            out = store.get(conn, rid)
        self._freed()
        assert out is not None
        return out

    # ---- what time does --------------------------------------------------------------

    def tick(self) -> list[int]:
        """Record what the clock did to open reservations: used (its party holds one of its
        units in the window), expired (unused past its grace period), ended (past its end).
        Returns the ids that expired or ended."""
        now = self._clock()
        with self.db.transaction(immediate=False) as conn:
            opened = store.open_ones(conn)
        if not opened or all(now < r.start for r in opened):
            return []
        holders = {
            u.uuid: a for a in self.allocations.all_live() for u in a.units
        }  # unit → its live allocation
        done: list[int] = []
        with self.db.transaction() as conn:
            for r in store.open_ones(conn):
                w = window_of(r)
                if now < r.start:
                    continue
                if now >= r.end:
                    self._end(conn, r, "ended", now, "its window is over")
                    done.append(r.id)
                    continue
                if not w.used:
                    users = {holders[u].user: holders[u] for u in r.units if u in holders}
                    user = next(
                        (
                            n
                            for n, a in users.items()
                            if w.is_for(n, unix_groups(n) | {a.group or ""})
                        ),
                        None,
                    )
                    if user is not None:
                        store.mark_used(conn, r.id, now)
                        events.record(
                            conn,
                            kind="admin",
                            action="reservation_used",
                            reason="allocation",
                            actor=DAEMON,
                            user=r.user or user,
                            message=f"reservation {r.id} ({w.party}) in use by {user}",
                            details={"reservation": r.id},
                            ts=now,
                        )
                        continue
                if not w.in_force(now):
                    self._end(
                        conn,
                        r,
                        "expired",
                        now,
                        f"not used within its grace period ({span(r.grace_s)}); its units are"
                        " back in the pool",
                    )
                    done.append(r.id)
        if done:
            self._freed()
        return done

    def _end(
        self, conn: sqlite3.Connection, r: Reservation, state: str, now: float, why: str
    ) -> None:
        if store.end(conn, r.id, state, DAEMON, now):
            events.record(
                conn,
                kind="admin",
                action=f"reservation_{state}",
                reason="reservation",
                actor=DAEMON,
                user=r.user,
                message=f"reservation {r.id} ({window_of(r).party}) {state}: {why}",
                details={"reservation": r.id, "units": list(r.units)},
                ts=now,
            )

    def _freed(self) -> None:
        for hook in self.allocations.on_freed:
            hook()

    # ---- parsing ---------------------------------------------------------------------

    def _party(self, for_: str) -> tuple[str | None, str | None]:
        """(user, None) or (None, group): a user with an account; `group:NAME` (or a name that
        is no user) a Unix group or a group of the config."""
        name = for_.strip()
        forced = name.startswith(GROUP_PREFIX)
        if forced:
            name = name[len(GROUP_PREFIX) :].strip()
        if not name:
            raise UsageError("--for is empty", fix="Give a user name, or group:NAME.")
        if not forced:
            try:
                pwd.getpwnam(name)
                return name, None
            except KeyError:
                pass
        known = name in self.allocations.config.groups
        if not known:
            try:
                grp.getgrnam(name)
                known = True
            except KeyError:
                known = False
        if not known:
            raise UsageError(
                f"--for {for_!r}: no user {'or group ' if not forced else ''}of that name"
                if not forced
                else f"--for {for_!r}: no group of that name",
                why="Neither an account (getent passwd) nor a Unix group (getent group) nor a"
                " group in the config has that name.",
                fix="Check the spelling: --for alice, or --for group:NAME for a group.",
            )
        return None, name


def _moment(flag: str, text: str, now: float, base: float) -> float:
    """A moment (timetext.parse_moment), or a length from `base` ('4h', '+4h')."""
    try:
        return parse_moment(text, now)
    except ValueError:
        pass
    try:
        return base + parse_duration(text.strip().removeprefix("+"))
    except ValueError:
        raise UsageError(
            f"{flag} {text!r} is neither a time nor a length of time",
            fix="Give a time (now, 18:00, 2026-12-20, '2026-12-20 18:00') or a length"
            " (2h, 1d; --to counts it from --from).",
        ) from None


def _resolve(rows: Sequence[units_store.UnitRow], targets: Sequence[str]) -> tuple[Unit, ...]:
    """Units by the names `ds01 gpu status` shows: a GPU index ('3': the GPU, or all its MIG
    devices), a MIG device's name ('7/1.0'), a unit UUID or a GPU UUID; commas separate."""
    names = [t.strip() for part in targets for t in part.split(",") if t.strip()]
    if not names:
        raise UsageError(
            "UNITS is empty: name at least one unit",
            fix="For example: 0,1 or 7/1.0 (ds01 gpu status).",
        )
    live = [r.unit for r in rows]
    out: dict[str, Unit] = {}
    for name in names:
        hit = [
            u for u in live if name in (u.uuid, u.gpu_uuid, u.name) or (name == str(u.gpu_index))
        ]
        if not hit:
            raise UsageError(
                f"no unit or GPU here is called {name!r}",
                fix="Use a GPU index, a MIG device name (7/1.0) or a UUID from 'ds01 gpu status'.",
            )
        for u in hit:
            out[u.uuid] = u
    return tuple(sorted(out.values(), key=lambda u: (u.gpu_index, u.name, u.uuid)))


def _and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"
