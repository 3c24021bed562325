"""Allocation use cases. Each decision is one BEGIN IMMEDIATE transaction: build the snapshot,
call the pure scheduler, write the allocation and its event — or roll everything back.

Must not talk to Docker or NVML; containers and inventory call in through these methods.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ds01.config import Config, ResolvedLimits
from ds01.errors import NotFound, PermissionDenied, Refusal, RefusalReason, UsageError
from ds01.identity import Caller, is_admin, require_admin, unix_groups
from ds01.model.activity import Countdown
from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import MachineSample
from ds01.model.profile import parse_profile
from ds01.scheduler import options
from ds01.scheduler.busy import BusyPolicy
from ds01.scheduler.place import place
from ds01.scheduler.reservations import Verdict, Window
from ds01.scheduler.snapshot import (
    Holding,
    Placement,
    Request,
    RequestKind,
    Snapshot,
    UnitState,
    UnitUse,
)
from ds01.store import activity as activity_store
from ds01.store import allocations as allocs
from ds01.store import consistency, events, intents, live
from ds01.store import units as units_store
from ds01.store.allocations import AllocationRow
from ds01.store.db import Database
from ds01.timetext import clock

DAEMON = "ds01d"
MAX_GPUS_PER_REQUEST = 64  # no server has more; a bound before any arithmetic


@dataclass(frozen=True)
class AllocationRequest:
    kind: RequestKind
    count: int = 0
    profiles: tuple[str, ...] = ()
    gpueq: GpuEq | None = None
    container: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "count": self.count,
            "profiles": list(self.profiles),
            "gpueq": self.gpueq.as_text() if self.gpueq is not None else None,
        }

    @classmethod
    def from_options(
        cls,
        *,
        gpus: int | None = None,
        mig: Sequence[str] | None = None,
        gpueq: str | None = None,
        cpu_only: bool = False,
        container: str | None = None,
        default_gpus: int | None = None,
    ) -> AllocationRequest:
        """The one mapping from a request's GPU options — the API's allocate and deploy bodies,
        the gate's --gpus — to a request: one malformed request, one error (a UsageError),
        wherever it came from. With none of them given, `default_gpus` whole GPUs (deploy: a
        "GPU container" means one GPU), else the error."""
        given = [
            name
            for name, value in (
                ("gpus", gpus),
                ("mig", mig),
                ("gpueq", gpueq),
                ("cpu_only", cpu_only or None),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise UsageError(
                f"give one of gpus, mig, gpueq or cpu_only, not {' and '.join(given)}",
                fix="Ask for whole GPUs (--gpus N), MIG slices (--mig PROFILE), an amount "
                "(--gpueq X) or no GPU (--cpu-only).",
            )
        if gpus is not None:
            if not 1 <= gpus <= MAX_GPUS_PER_REQUEST:
                raise UsageError(
                    f"gpus: expected 1 to {MAX_GPUS_PER_REQUEST} whole GPUs, got {gpus}",
                    fix="Use --cpu-only for a container without a GPU.",
                )
            return cls(RequestKind.GPUS, count=gpus, container=container)
        if mig is not None:
            if not mig:
                raise UsageError("mig: name at least one MIG profile, e.g. 3g.40gb")
            names = tuple(parse_profile(p).name for p in mig)
            return cls(RequestKind.MIG, profiles=names, container=container)
        if gpueq is not None:
            try:
                amount = GpuEq.parse(gpueq)
            except (ValueError, ZeroDivisionError):
                raise UsageError(
                    f"gpueq: expected a number like 0.5 or 3/7, got {str(gpueq)[:40]!r}"
                ) from None
            if not amount:
                raise UsageError("gpueq: must be greater than 0", fix="Use --cpu-only for no GPU.")
            return cls(RequestKind.GPUEQ, gpueq=amount, container=container)
        if cpu_only:
            return cls(RequestKind.CPU, container=container)
        if default_gpus is not None:
            return cls(RequestKind.GPUS, count=default_gpus, container=container)
        raise UsageError(
            "give one of gpus, mig, gpueq or cpu_only",
            fix="Ask for whole GPUs, MIG slices, an amount of GPU, or no GPU.",
        )

    @classmethod
    def from_json(cls, data: dict[str, Any], container: str | None) -> AllocationRequest:
        g = data.get("gpueq")
        return cls(
            kind=RequestKind(data["kind"]),
            count=int(data.get("count") or 0),
            profiles=tuple(data.get("profiles") or ()),
            gpueq=GpuEq(g) if g is not None else None,
            container=container,
        )


@dataclass(frozen=True)
class UnitView:
    """A unit with who holds it, for `ds01 gpu status`."""

    unit: units_store.UnitRow
    allocation: AllocationRow | None


def _ts(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, UTC) if t is not None else None


class AllocationService:
    def __init__(
        self,
        db: Database,
        config: Callable[[], Config],
        clock: Callable[[], float] = time.time,
        owner_groups: Callable[[str], frozenset[str]] = unix_groups,
    ) -> None:
        self.db = db
        # An allocation owner's Unix groups, for their limits when ds01d acts on the owner's
        # behalf (hold): ds01d passes its CallerCache, so a Docker event asks NSS nothing.
        self._owner_groups = owner_groups
        # The units and live allocations in memory, equal to the database (store/live.py):
        # every change this service makes to an allocation is noted there as it commits.
        self.live = live.LiveCache(db)
        self._config = config
        self._clock = clock
        # limits_for(): the config they were resolved from, and (user, groups) → limits.
        self._resolved: tuple[Config | None, dict[tuple[str, frozenset[str]], ResolvedLimits]] = (
            None,
            {},
        )
        # Called after a user or admin released a live allocation (its row before the release):
        # the container service stops a container still running on the units.
        self.on_released: list[Callable[[AllocationRow], None]] = []
        # Called once a transaction that released any allocation has committed (its units are
        # free), by whoever released it — a user, an expiry, the lifecycle: the queue's
        # dispatcher wakes. Runs under the database's lock, maybe on the event loop: only
        # hand the news on (loop.call_soon_threadsafe), never wait.
        self.on_freed: list[Callable[[], None]] = []
        # What runs on each unit, from the daemon's latest sample (services/unituse.py; set
        # by the daemon). Read once per decision, never an NVML call.
        self.unit_use: Callable[[], Mapping[str, UnitUse]] = dict
        # _snapshot()'s UnitState of each unit with what it was made of, compared by identity:
        # from one decision to the next most units' row, holder and use are the same objects
        # (store/live.py keeps them), and rebuilding 56+ states was a tenth of a decision.
        self._states: dict[str, tuple[object, object, object, UnitState]] = {}
        # Admins' reservations of units (services/reservations.py): what they keep from whom.
        from ds01.services.reservations import ReservationBook

        self.reservations = ReservationBook(self, self._clock)

    @property
    def config(self) -> Config:
        return self._config()

    def limits_for(self, caller: Caller) -> ResolvedLimits:
        """The caller's limits, resolved once per config (a reload brings a new Config) and
        per user and groups, not on every decision."""
        config = self.config
        kept, resolved = self._resolved
        if kept is not config:
            resolved = {}
            self._resolved = (config, resolved)
        key = (caller.name, caller.groups)
        out = resolved.get(key)
        if out is None:
            out = resolved[key] = config.resolve(caller.name, caller.groups)
        return out

    # ---- inventory -------------------------------------------------------------------

    def sync_units(self, sample: MachineSample) -> units_store.SyncResult:
        now = self._clock()
        with self.db.transaction() as conn:
            result = units_store.sync(conn, sample.units(), now)
            for uuid in result.added:
                events.record(
                    conn,
                    kind="unit",
                    action="added",
                    reason="inventory",
                    actor=DAEMON,
                    message=f"unit {uuid} appeared",
                    ts=now,
                )
            for uuid in result.returned:
                events.record(
                    conn,
                    kind="unit",
                    action="returned",
                    reason="inventory",
                    actor=DAEMON,
                    message=f"unit {uuid} is back",
                    ts=now,
                )
            for uuid in result.gone:
                events.record(
                    conn,
                    kind="unit",
                    action="gone",
                    reason="inventory",
                    actor=DAEMON,
                    message=f"unit {uuid} disappeared from the "
                    "inventory; it is marked gone and not handed out",
                    ts=now,
                )
        return result

    # ---- decisions -------------------------------------------------------------------

    def _snapshot(self, view: live.View, now: float, user: str, group: str | None) -> Snapshot:
        """What place() needs, and no more: who holds each unit, the full holdings of the
        caller and of their group (quotas), and held allocations (what frees up next), from
        the in-memory view of the decision's own transaction."""
        holder = view.holders()
        use = self.unit_use()
        kept = self._states  # only used under the database's lock: inside the transaction
        states: list[UnitState] = []
        for r in view.units:
            uuid = r.unit.uuid
            h, u = holder.get(uuid), use.get(uuid)
            k = kept.get(uuid)
            if k is not None and k[0] is r and k[1] is h and k[2] is u:
                states.append(k[3])
                continue
            state = UnitState(
                unit=r.unit,
                alloc_id=h.id if h is not None else None,
                holder=h.user if h is not None else None,
                drained=r.drained,
                last_released_at=_ts(r.last_released_at),
                use=u,
            )
            kept[uuid] = (r, h, u, state)
            states.append(state)
        holdings = tuple(
            Holding(
                alloc_id=a.id,
                user=a.user,
                state=a.state,
                units=a.units,
                container=a.container,
                group=a.group,
                hold_until=_ts(a.hold_until),
            )
            for a in view.live.values()
            if a.user == user
            or (group is not None and a.group == group)
            or a.state is AllocState.HELD
        )
        return Snapshot(units=tuple(states), holdings=holdings, now=_ts(now))

    def allocate(
        self,
        caller: Caller,
        req: AllocationRequest,
        *,
        existing_container: bool = False,
        preferred_units: Iterable[str] = (),
        intent: intents.Intent | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> AllocationRow:
        """Reserve units for the caller; activate() must follow within the reservation
        timeout. With `intent`, the operation's intent record is written in the same
        transaction (store/intents.py): the reservation then waits for activate() or a
        release, and recovery decides if its operation dies. on_warning hears what the user
        should know about the units (one busy outside ds01), after the commit."""
        resolved = self.limits_for(caller)
        timeout = self.config.allocation.reservation_timeout
        request = Request(
            user=caller.name,
            kind=req.kind,
            count=req.count,
            profiles=req.profiles,
            gpueq=req.gpueq,
            container=req.container,
            preferred_units=tuple(preferred_units),
            existing_container=existing_container,
        )
        try:
            if req.kind is not RequestKind.CPU and self.config.cluster.backend == "slurm":
                raise _slurm_owns_the_gpus()
            with self.db.transaction() as conn:
                now = self._clock()  # under the lock: ClockWatch.check moves deadlines there
                view = self.live.view(conn)
                if req.container and not existing_container:
                    clash = next(
                        (
                            a
                            for a in view.live.values()
                            if a.user == caller.name and a.container == req.container
                        ),
                        None,
                    )
                    if clash is not None:
                        raise Refusal(
                            RefusalReason.NAME_IN_USE,
                            f"you already have an allocation for container '{req.container}'"
                            f" (allocation {clash.id}, {clash.state})",
                            fix=f"Retire it first (ds01 container retire {req.container}) or"
                            " pick another name.",
                        )
                groups = _party_groups(caller, resolved)
                latest = _Latest(conn, caller.name, resolved, now)
                verdict = self.reservations.verdict(conn, caller.name, groups, now, latest)
                placement = self._place(
                    self._snapshot(view, now, caller.name, resolved.group),
                    request,
                    resolved,
                    verdict,
                    latest,
                    now,
                )
                if verdict is not None and verdict.mine:
                    self.reservations.note_use(
                        conn, caller.name, groups, placement.units, now, caller.name
                    )
                alloc_id = allocs.insert(
                    conn,
                    user=caller.name,
                    uid=caller.uid,
                    group=resolved.group,
                    container=req.container,
                    request=req.to_json(),
                    units=placement.units,
                    now=now,
                    expires_at=now + timeout,
                )
                if intent is not None:
                    intents.open_intent(conn, alloc_id, intent, now)
                events.record(
                    conn,
                    kind="alloc",
                    action="reserved",
                    reason="request",
                    actor=caller.name,
                    user=caller.name,
                    allocation_id=alloc_id,
                    message=_describe(placement.units, req.container),
                    details={
                        "request": req.to_json(),
                        "units": [u.uuid for u in placement.units],
                        "gpueq": placement.gpueq.as_text(),
                        **({"warnings": list(placement.warnings)} if placement.warnings else {}),
                    },
                    ts=now,
                )
                row = allocs.reread(conn, alloc_id, placement.units)
                self.live.changed(conn, view.generation, row)
            if on_warning is not None:
                for warning in placement.warnings:
                    on_warning(warning)
            return row
        except Refusal as refusal:
            with self.db.transaction() as conn:
                events.record(
                    conn,
                    kind="alloc",
                    action="refused",
                    reason=refusal.reason.value,
                    actor=caller.name,
                    user=caller.name,
                    message=refusal.what,
                    details={"request": req.to_json()},
                    ts=self._clock(),
                )
            raise

    def _place(
        self,
        snap: Snapshot,
        request: Request,
        resolved: ResolvedLimits,
        verdict: Verdict | None,
        latest: _Latest,
        now: float,
    ) -> Placement:
        """place() with the admins' reservations (scheduler/reservations.py): units reserved
        for the requester first in their window; units reserved for others kept back — except
        units reserved later, which a request that must end before then gets when nothing
        else fits, with a warning saying by when."""
        busy = BusyPolicy(self.config.allocation.busy_units)
        if verdict is None:
            return place(snap, request, resolved.limits, busy)
        if verdict.mine:
            # In the machine's order (GPU index), as `ds01 gpu status` lists them.
            order = {us.unit.uuid: i for i, us in enumerate(snap.units)}
            extra = tuple(
                sorted(
                    (u for u in verdict.mine if u not in request.preferred_units),
                    key=lambda u: order.get(u, len(order)),
                )
            )
            request = replace(request, preferred_units=request.preferred_units + extra)
        keep = {**verdict.lendable, **verdict.withheld}
        try:
            return place(_withhold(snap, keep, now), request, resolved.limits, busy)
        except Refusal as first:
            if not verdict.lendable or first.reason not in (
                RefusalReason.NO_CAPACITY,
                RefusalReason.UNIT_BUSY,
            ):
                raise
            try:
                got = place(_withhold(snap, verdict.withheld, now), request, resolved.limits, busy)
            except Refusal:
                raise first from None
        lent = [u for u in got.units if u.uuid in verdict.lendable]
        if not lent:
            return got
        w = verdict.lendable[lent[0].uuid]
        end = latest()
        stop = (end or now) - resolved.limits.gpu_hold_after_stop_s
        one = len(lent) == 1
        warning = (
            f"{', '.join(u.title for u in lent)} {'is' if one else 'are'} {w.describe(now)}."
            f" You get {'it' if one else 'them'} because your container must end before then:"
            f" it is stopped at {clock(stop, now)} at the latest (your max_runtime)."
        )
        return replace(got, warnings=(*got.warnings, warning))

    def activate(
        self, alloc_id: int, *, container_id: str | None, actor: str, reason: str
    ) -> AllocationRow:
        """reserved/held → active: the container is running on these units."""
        with self.db.transaction() as conn:
            now = self._clock()
            current = allocs.get(conn, alloc_id)
            if current is not None and current.state is AllocState.ACTIVE:
                return current  # the Docker event and the command raced; one is enough
            before = live.generation(conn)
            src = allocs.transition(
                conn, alloc_id, AllocState.ACTIVE, now, container_id=container_id
            )
            intents.close(conn, alloc_id)  # the operation that reserved it is complete
            row = allocs.get(conn, alloc_id)
            assert row is not None
            self.live.changed(conn, before, row)
            events.record(
                conn,
                kind="alloc",
                action="activated",
                reason=reason,
                actor=actor,
                user=row.user,
                allocation_id=alloc_id,
                message=f"{src} → active",
                ts=now,
            )
            return row

    def hold(self, alloc_id: int, *, actor: str, reason: str) -> AllocationRow:
        """active → held until now + the owner's gpu_hold_after_stop (0 releases at once)."""
        # The owner's groups from NSS (LDAP may take seconds) before the write transaction, not
        # inside it holding the database: an allocation's owner never changes.
        with self.db.transaction(immediate=False) as conn:
            first = allocs.get(conn, alloc_id)
        owner = first.user if first is not None else None
        limits = self.config.resolve(owner, self._owner_groups(owner)).limits if owner else None
        with self.db.transaction() as conn:
            now = self._clock()
            row = allocs.get(conn, alloc_id)
            if row is None:
                raise NotFound(f"allocation {alloc_id} does not exist")
            if row.state is not AllocState.ACTIVE:
                return row  # already held or released (the Docker event and a command raced)
            if limits is None or row.user != owner:  # it did not exist a moment ago
                limits = self.config.resolve(row.user, self._owner_groups(row.user)).limits
            seconds = limits.gpu_hold_after_stop_s
            if seconds <= 0:
                return self._release_in(conn, row, actor=actor, reason=reason, now=now)
            before = live.generation(conn)
            allocs.transition(conn, alloc_id, AllocState.HELD, now, hold_until=now + seconds)
            events.record(
                conn,
                kind="alloc",
                action="held",
                reason=reason,
                actor=actor,
                user=row.user,
                allocation_id=alloc_id,
                message=f"GPU held until {clock(now + seconds, now)}",
                details={"hold_until": now + seconds},
                ts=now,
            )
            out = allocs.reread(conn, alloc_id, row.units)
            self.live.changed(conn, before, out)
            return out

    def _release_in(
        self,
        conn: sqlite3.Connection,
        row: AllocationRow,
        *,
        actor: str,
        reason: str,
        now: float,
        before: live.Generation | None = None,
    ) -> AllocationRow:
        """Release `row`, read in this transaction; `before`: the live generation when nothing
        has been written in it yet (read here when not given)."""
        if before is None:
            before = live.generation(conn)
        allocs.transition(conn, row.id, AllocState.RELEASED, now, release_reason=reason)
        intents.close(conn, row.id)
        events.record(
            conn,
            kind="alloc",
            action="released",
            reason=reason,
            actor=actor,
            user=row.user,
            allocation_id=row.id,
            message=f"released {_describe(row.units, row.container)}",
            details={"units": [u.uuid for u in row.units]},
            ts=now,
        )
        out = allocs.reread(conn, row.id, row.units)
        self.live.changed(conn, before, out)
        for hook in self.on_freed:
            self.db.after_commit(hook)
        return out

    def release(self, caller: Caller, alloc_id: int, reason: str) -> AllocationRow:
        """Release one allocation: its owner or an admin."""
        with self.db.transaction() as conn:
            now = self._clock()
            view = self.live.view(conn)
            # A live one is in the view (of this transaction's generation); a released or
            # unknown one is read from the tables.
            row = view.live.get(alloc_id) or allocs.get(conn, alloc_id)
            if row is None or (row.user != caller.name and not is_admin(caller, self.config)):
                # Others' allocations are reported as missing: no probing of who holds what.
                raise NotFound(
                    f"allocation {alloc_id} not found",
                    fix="See your allocations with 'ds01 quota' or 'ds01 container list'.",
                )
            if row.state is AllocState.RELEASED:
                return row
            out = self._release_in(
                conn, row, actor=caller.name, reason=reason, now=now, before=view.generation
            )
        for hook in self.on_released:
            hook(row)
        return out

    def release_by_daemon(self, alloc_id: int, reason: str) -> AllocationRow | None:
        with self.db.transaction() as conn:
            now = self._clock()
            row = allocs.get(conn, alloc_id)
            if row is None or row.state is AllocState.RELEASED:
                return row
            return self._release_in(conn, row, actor=DAEMON, reason=reason, now=now)

    def expire_due(self) -> list[int]:
        """Release reservations never bound in time and holds whose grace period ended."""
        done: list[int] = []
        with self.db.transaction() as conn:
            # Read under the database's lock, never before it: ClockWatch.check moves every
            # deadline by a clock step inside a transaction, so a time read before waiting for
            # that transaction is in the old frame and would find every moved deadline past.
            now = self._clock()
            for row in allocs.due(conn, now):
                reason = (
                    "reservation_expired" if row.state is AllocState.RESERVED else "hold_expired"
                )
                self._release_in(conn, row, actor=DAEMON, reason=reason, now=now)
                done.append(row.id)
        # Admins' reservations: used, expired unused, ended (services/reservations.py).
        self.reservations.tick()
        return done

    # ---- admin -----------------------------------------------------------------------

    def require_admin(self, caller: Caller, what: str) -> None:
        require_admin(caller, self.config, what)

    def drain(self, caller: Caller, target: str, reason: str, drained: bool) -> list[str]:
        """Drain (or undrain) a unit, or every unit of a GPU given by UUID or index."""
        self.require_admin(caller, "draining GPUs")
        with self.db.transaction() as conn:
            now = self._clock()
            rows = units_store.all_units(conn)
            hit = [
                r.unit.uuid
                for r in rows
                if target in (r.unit.uuid, r.unit.gpu_uuid) or target == str(r.unit.gpu_index)
            ]
            if not hit:
                raise UsageError(
                    f"no unit or GPU matches '{target}'",
                    fix="Use a UUID or GPU index from 'ds01 gpu status'.",
                )
            units_store.set_drained(conn, hit, drained, reason)
            events.record(
                conn,
                kind="admin",
                action="drained" if drained else "undrained",
                reason=reason,
                actor=caller.name,
                message=f"{len(hit)} unit(s) of {target}",
                details={"units": hit},
                ts=now,
            )
            return hit

    # ---- reads -----------------------------------------------------------------------

    def offers(self, caller: Caller) -> tuple[tuple[options.Offer, ...], Request]:
        """What the caller could still get now, and the one request to suggest to them
        (scheduler/options.py: place() asked on this snapshot), from one read transaction."""
        resolved = self.limits_for(caller)
        now = self._clock()
        with self.db.transaction(immediate=False) as conn:
            snap = self._snapshot(self.live.view(conn), now, caller.name, resolved.group)
            latest = _Latest(conn, caller.name, resolved, now)
            verdict = self.reservations.verdict(
                conn, caller.name, _party_groups(caller, resolved), now, latest
            )
        if verdict is not None:
            snap = _withhold(snap, {**verdict.lendable, **verdict.withheld}, now)
        lim = resolved.limits
        return (
            options.offers(snap, caller.name, lim),
            options.suggested(snap, caller.name, lim),
        )

    def status(self) -> list[UnitView]:
        with self.db.transaction(immediate=False) as conn:
            view = self.live.view(conn)
        holder = view.holders()
        return [UnitView(r, holder.get(r.unit.uuid)) for r in view.units]

    def live_allocations(self, caller: Caller, all_users: bool) -> list[AllocationRow]:
        if all_users:
            self.require_admin(caller, "listing everyone's allocations")
        with self.db.transaction(immediate=False) as conn:
            view = self.live.view(conn)
        return [a for a in view.live.values() if all_users or a.user == caller.name]

    def get(self, caller: Caller, alloc_id: int) -> AllocationRow:
        with self.db.transaction(immediate=False) as conn:
            row = allocs.get(conn, alloc_id)
        if row is None or (row.user != caller.name and not is_admin(caller, self.config)):
            raise NotFound(f"allocation {alloc_id} not found")
        return row

    def get_any(self, alloc_id: int) -> AllocationRow | None:
        """For the daemon's own use: no ownership check."""
        with self.db.transaction(immediate=False) as conn:
            return allocs.get(conn, alloc_id)

    def all_live(self) -> list[AllocationRow]:
        with self.db.transaction(immediate=False) as conn:
            return list(self.live.view(conn).live.values())

    def replace_intent(self, alloc_id: int, intent: intents.Intent) -> None:
        with self.db.transaction() as conn:
            intents.replace(conn, alloc_id, intent)

    def close_intent(self, alloc_id: int) -> None:
        """For an intent whose allocation already ended (no state to change)."""
        with self.db.transaction() as conn:
            intents.close(conn, alloc_id)

    def intent_of(self, alloc_id: int) -> intents.IntentRow | None:
        with self.db.transaction(immediate=False) as conn:
            return intents.get(conn, alloc_id)

    def check_state(self, known: set[str]) -> list[consistency.Problem]:
        """The state invariants the database can prove (store/consistency.py). A problem not
        in `known` (the last check's) is audited once, as a `daemon` event `invariant`."""
        now = self._clock()
        with self.db.transaction(immediate=False) as conn:
            found = consistency.check(conn, now)
        fresh = [p for p in found if str(p) not in known]
        if fresh:
            with self.db.transaction() as conn:
                for p in fresh:
                    events.record(
                        conn,
                        kind="daemon",
                        action="invariant",
                        reason=p.invariant,
                        actor=DAEMON,
                        message=p.message,
                        ts=now,
                    )
        return found

    def open_intents(self) -> list[intents.IntentRow]:
        with self.db.transaction(immediate=False) as conn:
            return intents.all_open(conn)

    def live_and_intents(self) -> tuple[list[AllocationRow], list[intents.IntentRow]]:
        """Both in one read transaction: a consistent picture for reconcile."""
        with self.db.transaction(immediate=False) as conn:
            return list(self.live.view(conn).live.values()), intents.all_open(conn)

    def last_for_container_id(self, container_id: str) -> AllocationRow | None:
        with self.db.transaction(immediate=False) as conn:
            return allocs.last_for_container_id(conn, container_id)

    def live_for_container_id(self, container_id: str) -> AllocationRow | None:
        # From the live allocations in memory (equal to the database, store/live.py), not a
        # query of its own: ds01d asks this for every Docker event and every gate start.
        with self.db.transaction(immediate=False) as conn:
            live = self.live.view(conn).live.values()
            return next((a for a in live if a.container_id == container_id), None)

    def events(
        self,
        caller: Caller,
        *,
        user: str | None,
        since: float | None,
        kind: str | None,
        limit: int = 1000,
    ) -> list[events.Event]:
        if not is_admin(caller, self.config):
            if user not in (None, caller.name):
                raise PermissionDenied(
                    "you can only read your own events",
                    fix="Drop --user, or ask an admin.",
                )
            user = caller.name
        with self.db.transaction(immediate=False) as conn:
            return events.query(conn, user=user, since=since, kind=kind, limit=limit)


class _Latest:
    """When what a request is given now must be back at the latest: now + the user's
    max_runtime + gpu_hold_after_stop; None without a max_runtime or while they are exempt
    from it (`ds01 admin exempt --from runtime`). Read once, and only when asked."""

    def __init__(
        self, conn: sqlite3.Connection, user: str, resolved: ResolvedLimits, now: float
    ) -> None:
        self._conn, self._user, self._resolved, self._now = conn, user, resolved, now
        self._value: tuple[float | None] | None = None

    def __call__(self) -> float | None:
        if self._value is None:
            self._value = (self._read(),)
        return self._value[0]

    def _read(self) -> float | None:
        lim = self._resolved.limits
        if lim.max_runtime_s is None:
            return None
        for e in activity_store.live_exemptions(self._conn, self._now):
            if e.user == self._user and e.countdown is Countdown.RUNTIME:
                return None
        return self._now + lim.max_runtime_s + lim.gpu_hold_after_stop_s


def _party_groups(caller: Caller, resolved: ResolvedLimits) -> frozenset[str]:
    """The groups a reservation `--for group:NAME` matches: the caller's Unix groups and
    their group in the config."""
    return caller.groups | {resolved.group} if resolved.group else caller.groups


def _withhold(snap: Snapshot, keep: Mapping[str, Window], now: float) -> Snapshot:
    """The snapshot with the free units in `keep` marked reserved (not free), each with its
    reservation's description for the refusal text."""
    if not keep:
        return snap
    units = tuple(
        replace(us, reserved=keep[us.unit.uuid].describe_to_others(now))
        if us.unit.uuid in keep and us.alloc_id is None
        else us
        for us in snap.units
    )
    return replace(snap, units=units)


def _slurm_owns_the_gpus() -> Refusal:
    return Refusal(
        RefusalReason.SLURM_BACKEND,
        "this server's GPUs are SLURM's (cluster.backend: slurm): ds01d hands none out",
        why="Two schedulers must never give out the same GPU; SLURM places and isolates jobs.",
        fix="Deploy through SLURM: ds01 container deploy NAME --image IMG --gpus N -- CMD"
        " (docs/slurm.md). Containers without a GPU (--cpu-only) still run here.",
    )


def _describe(units: Iterable[Any], container: str | None) -> str:
    us = list(units)
    what = ", ".join(f"{u.title} ({u.label})" for u in us) or "no GPU"
    return f"{what} for {container}" if container else what
