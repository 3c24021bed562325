"""The queue's use cases (issue 16): queue a deploy that capacity refused, show and cancel
entries, explain an entry's priority, and the dispatcher that admits entries as units free up.

The dispatcher deploys through ContainerService.deploy, exactly as `ds01 container deploy`
does: same checks, same intent record, same undo on failure. An entry is admitted at most once,
also across a kill -9: it is marked `admitting` (committed) before its deploy starts, only a
`queued` entry can be taken, and a restarted ds01d settles an `admitting` entry from the
allocations (a live allocation for its container: admitted; none: queued again, since recovery
finished or undid the deploy; a reservation still open: wait). Docker calls never happen inside
a transaction. Must not decide priority (queue/priority.py does) nor render anything.
"""

from __future__ import annotations

import itertools
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from ds01 import faults
from ds01.config import Config
from ds01.errors import Ds01Error, NotFound, Refusal, RefusalReason, RuntimeUnavailable
from ds01.identity import Caller, caller_of_name, is_admin
from ds01.model.activity import Countdown
from ds01.model.allocation import AllocState
from ds01.queue import priority as prio
from ds01.queue.eta import Release, estimate
from ds01.scheduler import reservations as reserved
from ds01.scheduler.snapshot import RequestKind
from ds01.services import gatequeue
from ds01.services.allocation import AllocationRequest
from ds01.services.containers import ContainerService, DeployRequest
from ds01.store import events
from ds01.store import queue as store
from ds01.store.allocations import AllocationRow
from ds01.store.queue import Entry, EntryState

log = logging.getLogger("ds01d.queue")

DAEMON = "ds01d"
TOPIC = "queue"
# A blocked head is tried again when allocations change, and at least this often (a drain
# ending or a unit coming back changes capacity without an allocation changing).
RETRY_BLOCKED_S = 30.0
# Usage older than this many half-lives counts less than 1/1000: not read.
HALF_LIVES_READ = 10
# Refusals after which an entry keeps waiting: capacity, and the quotas its user's own
# holdings decide (they change when the user releases something).
WAIT_REASONS = frozenset(
    {
        RefusalReason.NO_CAPACITY,
        RefusalReason.UNIT_BUSY,
        RefusalReason.MAX_GPUEQ,
        RefusalReason.GROUP_MAX_GPUEQ,
        RefusalReason.MAX_CONTAINERS,
    }
)


class Notify(Protocol):
    def notify(
        self,
        user: str,
        topic: str,
        message: str,
        *,
        allocation_id: int | None = None,
        container_id: str | None = None,
    ) -> object: ...


class HasStop(Protocol):
    """What the estimate reads of a running allocation's countdowns (lifecycle's Outlook)."""

    @property
    def stop_at(self) -> float | None: ...


@dataclass(frozen=True)
class Placed:
    """An entry with its place in the line (1 = next; None once it has ended) and when it is
    expected to start (queue/eta.py; None: unknown)."""

    entry: Entry
    position: int | None
    priority: prio.Priority | None
    estimated_start: float | None = None


def _groups(e: Entry) -> tuple[str, ...]:
    """The groups a reservation for a group matches for an entry, as far as a read knows
    them without NSS: its user's group in the config."""
    return (e.group,) if e.group else ()


def request_json(req: DeployRequest) -> dict[str, Any]:
    return {
        "name": req.name,
        "image": req.image,
        "allocation": req.allocation.to_json(),
        "workspace": req.workspace,
        "data": list(req.data),
        "env": dict(req.env),
        "command": list(req.command) if req.command is not None else None,
        "interactive": req.interactive,
    }


def request_of(data: dict[str, Any]) -> DeployRequest:
    name = str(data["name"])
    command = data.get("command")
    return DeployRequest(
        name=name,
        image=str(data["image"]),
        allocation=AllocationRequest.from_json(data["allocation"], name),
        workspace=data.get("workspace"),
        data=tuple(data.get("data") or ()),
        env=dict(data.get("env") or {}),
        command=tuple(command) if command is not None else None,
        interactive=bool(data.get("interactive")),
    )


def request_size(req: AllocationRequest) -> float:
    """Units the request asks for (priority's size factor)."""
    if req.kind is RequestKind.GPUS:
        return float(req.count)
    if req.kind is RequestKind.MIG:
        return float(len(req.profiles))
    if req.kind is RequestKind.GPUEQ and req.gpueq is not None:
        return float(max(1, math.ceil(Fraction(req.gpueq.as_text()))))
    return 1.0


def describe_request(data: dict[str, Any]) -> str:
    """'1 GPU', '2 GPUs', 'MIG 3g.40gb', 'gpueq 1/2': what an entry waits for."""
    a = data.get("allocation") or {}
    kind = a.get("kind")
    if kind == RequestKind.GPUS.value:
        n = int(a.get("count") or 0)
        return f"{n} GPU" + ("s" if n != 1 else "")
    if kind == RequestKind.MIG.value:
        return "MIG " + ",".join(a.get("profiles") or ())
    if kind == RequestKind.GPUEQ.value:
        return f"gpueq {a.get('gpueq')}"
    return "no GPU"


def settings_of(config: Config) -> prio.Settings:
    q = config.queue
    return prio.Settings(
        half_life_s=float(q.usage_half_life),
        usage_scale=float(q.usage_scale),
        age_max_s=float(q.age_max),
        weights=prio.Weights(
            fairshare=q.weights.fairshare,
            age=q.weights.age,
            group=q.weights.group,
            size=q.weights.size,
        ),
        group_priority=dict(q.group_priority),
    )


class QueueService:
    def __init__(
        self,
        containers: ContainerService,
        notifier: Notify | None,
        clock: Callable[[], float] = time.time,
        config: Callable[[], Config] | None = None,
    ) -> None:
        self.containers = containers
        self.allocations = containers.allocations
        self.db = self.allocations.db
        self._notifier = notifier
        self._clock = clock
        self._config = config or (lambda: self.allocations.config)
        # Each active allocation's countdowns (lifecycle/reclaim.py Reclaimer.outlooks; set by
        # ds01d): their stop times feed the estimated start times.
        self.outlooks: Callable[[list[AllocationRow]], Mapping[int, HasStop]] = lambda rows: {}
        # (user, countdown) → until when they are exempt from it (lifecycle/exemptions.py; set
        # by ds01d): a user exempt from max_runtime is never backfilled.
        self.exemption_ends: Callable[[], Mapping[tuple[str, Countdown], float]] = dict
        self._pass = threading.Lock()  # one dispatch pass at a time
        # What the allocations looked like when the head was last refused for capacity.
        self._blocked: tuple[object, float] | None = None
        # Docker creates the gate holds open while their entries wait (services/gatequeue.py).
        self.waiters = gatequeue.Waiters()
        # Whether the line may hold an entry, without a query (line_empty): every path that
        # adds an entry bumps _added after its commit; a pass that found the line empty
        # records the count it saw before reading. Enqueues run on worker threads: next() of
        # an itertools.count is atomic, `+= 1` is not.
        self._adds = itertools.count(1)
        self._added = 0
        self._empty_at: int | None = None

    @property
    def config(self) -> Config:
        return self._config()

    def now(self) -> float:
        return self._clock()

    # ---- users' requests -------------------------------------------------------------

    def enqueue(self, caller: Caller, req: DeployRequest, refusal: Refusal) -> Placed:
        """Queue a deploy that `refusal` (no capacity, now) turned away. Over quota, a request
        is refused as before and never queued (place() checks quotas before capacity)."""
        if refusal.reason not in (RefusalReason.NO_CAPACITY, RefusalReason.UNIT_BUSY):
            raise refusal
        return self.add_entry(caller, req.name, request_json(req), req.allocation, refusal)

    def add_entry(
        self,
        caller: Caller,
        name: str,
        request: dict[str, Any],
        alloc: AllocationRequest,
        refusal: Refusal,
    ) -> Placed:
        """A new waiting entry within queue.max_per_user: a deploy (enqueue) or a docker
        create the gate holds open (services/gatequeue.py)."""
        now = self._clock()
        group = self.allocations.limits_for(caller).group
        max_per_user = self.config.queue.max_per_user
        try:
            with self.db.transaction() as conn:
                mine = [e for e in store.waiting(conn) if e.user == caller.name]
                if len(mine) >= max_per_user:
                    raise Refusal(
                        RefusalReason.POLICY,
                        f"you already have {len(mine)} requests in the queue (at most "
                        f"{max_per_user})",
                        why=refusal.what,
                        fix="Wait for one to start, or cancel one (ds01 queue cancel ID).",
                    )
                entry_id = store.add(
                    conn,
                    user=caller.name,
                    group=group,
                    name=name,
                    request=request,
                    size=request_size(alloc),
                    now=now,
                )
                events.record(
                    conn,
                    kind="queue",
                    action="queued",
                    reason=refusal.reason.value,
                    actor=caller.name,
                    user=caller.name,
                    message=f"queued '{name}' ({describe_request(request)}): {refusal.what}",
                    details={
                        "entry": entry_id,
                        "request": alloc.to_json(),
                        "origin": gatequeue.origin_of(request),
                    },
                    ts=now,
                )
        except sqlite3.IntegrityError:
            raise Refusal(
                RefusalReason.NAME_IN_USE,
                f"you already have a request for a container named '{name}' in the queue",
                fix="See it with 'ds01 queue'; cancel it (ds01 queue cancel ID) or pick "
                "another name.",
            ) from None
        self._added = next(self._adds)
        self._blocked = None
        return self._placed(caller, entry_id)

    def _placed(self, caller: Caller, entry_id: int) -> Placed:
        for p in self.entries(caller, all_users=False, ended=True):
            if p.entry.id == entry_id:
                return p
        raise NotFound(f"queue entry {entry_id} not found")

    def _ranked(self, conn: sqlite3.Connection, now: float) -> list[tuple[Entry, prio.Priority]]:
        waiting = store.waiting(conn)
        if not waiting:
            return []
        s = settings_of(self.config)
        users = sorted({e.user for e in waiting})
        usages = self._usages(conn, users, now, s)
        by_id = {e.id: e for e in waiting}
        order = prio.ranked(
            [prio.Waiting(e.id, e.user, e.group, e.size, e.created_at) for e in waiting],
            usages,
            now,
            s,
        )
        return [(by_id[p.entry_id], p) for p in order]

    def _usages(
        self, conn: sqlite3.Connection, users: list[str], now: float, s: prio.Settings
    ) -> list[prio.Usage]:
        penalty = float(self.config.queue.entry_penalty)
        out = []
        for r in store.usage(conn, users, now - HALF_LIVES_READ * s.half_life_s):
            g = float(sum((Fraction(x) for x in r.gpueqs), Fraction(0)))
            out.append(
                prio.Usage(
                    r.user, g, r.created_at, r.released_at, g * penalty if r.from_queue else 0.0
                )
            )
        return out

    def entries(self, caller: Caller, all_users: bool, ended: bool = False) -> list[Placed]:
        """The waiting entries in priority order with their positions: the caller's own, or
        (all_users) everyone's; `ended`: the caller's finished entries too (newest first)."""
        now = self._clock()
        with self.db.transaction(immediate=False) as conn:
            ranked = self._ranked(conn, now)
            done = [e for e in store.of_user(conn, caller.name) if e.state not in store.WAITING]
        etas = self._estimates([e for e, _ in ranked], now)
        out = [
            Placed(e, i + 1, p, etas[i])
            for i, (e, p) in enumerate(ranked)
            if all_users or e.user == caller.name
        ]
        if ended:
            out += [Placed(e, None, None) for e in done]
        return out

    def line_empty(self) -> bool:
        """True when the last pass found no entry and none was added since: a release then
        needs no pass (on a busy server without a queue, that pass was a tenth of the cost
        of an allocate+release cycle). False when unsure."""
        return self._empty_at == self._added

    def waiting_count(self) -> int:
        with self.db.transaction(immediate=False) as conn:
            return len(store.waiting(conn))

    def may_see(self, caller: Caller, entry: Entry) -> bool:
        """Whether the caller may see who queued `entry` and what for: theirs, an admin, or
        everyone's names under privacy show_all (the request itself stays the owner's)."""
        return entry.user == caller.name or is_admin(caller, self.config)

    def shows_user(self, caller: Caller, entry: Entry) -> bool:
        return self.may_see(caller, entry) or self.config.privacy != "hide_others"

    def _own(self, caller: Caller, entry_id: int) -> Placed:
        """The entry, when the caller owns it or is an admin; else not found (no probing)."""
        now = self._clock()
        with self.db.transaction(immediate=False) as conn:
            entry = store.get(conn, entry_id)
            ranked = self._ranked(conn, now)
        if entry is None or not self.may_see(caller, entry):
            raise NotFound(
                f"queue entry {entry_id} not found",
                fix="See your entries with 'ds01 queue'.",
            )
        etas = self._estimates([e for e, _ in ranked], now)
        for i, (e, p) in enumerate(ranked):
            if e.id == entry_id:
                return Placed(e, i + 1, p, etas[i])
        return Placed(entry, None, None)

    def _estimates(self, in_order: list[Entry], now: float) -> list[float | None]:
        """Estimated start of each waiting entry, in priority order (queue/eta.py): the units
        free now, and each live allocation's known end — a hold's end; a running container's
        next stop (max runtime, idle) plus its owner's gpu_hold_after_stop."""
        if not in_order:
            return []
        free_units = frozenset(
            v.unit.unit.uuid
            for v in self.allocations.status()
            if v.allocation is None and not v.unit.drained and not v.unit.gone
        )
        # Admins' reservations keep some of them (scheduler/reservations.py).
        windows = self.allocations.reservations.windows()
        kept, returns = reserved.set_aside(windows, free_units, now)
        free = len(free_units) - kept
        live = self.allocations.all_live()
        outlooks = self.outlooks(live)
        releases: list[Release] = []
        for a in live:
            at: float | None = None
            if a.state is AllocState.HELD:
                at = a.hold_until
            elif a.state is AllocState.ACTIVE:
                o = outlooks.get(a.id)
                stop = o.stop_at if o is not None else None
                if stop is not None:
                    # The owner's groups by the file only (no NSS lookup on a read): an estimate.
                    hold = self.config.resolve(a.user, ()).limits.gpu_hold_after_stop_s
                    at = stop + hold
            if at is not None:
                releases.append(Release(at, len(a.units)))
        back = [Release(at, n) for at, n in returns]
        etas = estimate([e.size for e in in_order], free, releases + back, now)
        if not windows:
            return etas
        return reserved.with_own_windows(
            etas, [(e.user, _groups(e), e.size) for e in in_order], windows, free_units, now
        )

    def explain(self, caller: Caller, entry_id: int) -> Placed:
        return self._own(caller, entry_id)

    def cancel(self, caller: Caller, entry_id: int) -> Entry:
        """Cancel a queued entry: its owner or an admin. One being started now cannot be."""
        placed = self._own(caller, entry_id)
        now = self._clock()
        with self.db.transaction() as conn:
            done = store.set_state(
                conn,
                entry_id,
                EntryState.CANCELLED,
                now,
                from_states=(EntryState.QUEUED,),
                note=f"cancelled by {caller.name}",
            )
            if done:
                events.record(
                    conn,
                    kind="queue",
                    action="cancelled",
                    reason="user_cancel" if caller.name == placed.entry.user else "admin_cancel",
                    actor=caller.name,
                    user=placed.entry.user,
                    message=f"cancelled queue entry {entry_id} ('{placed.entry.name}')",
                    details={"entry": entry_id},
                    ts=now,
                )
            entry = store.get(conn, entry_id)
        assert entry is not None
        if done and (w := self.waiters.of(entry)) is not None:
            w.poke()  # its docker client is answered now
        if not done:
            raise Refusal(
                RefusalReason.POLICY,
                f"queue entry {entry_id} cannot be cancelled: it is {entry.state.value}",
                why="Only a waiting entry can be cancelled; one being started or already "
                "started is a container now.",
                fix=f"Retire the container if you do not want it: ds01 container retire "
                f"{entry.name}",
            )
        self._blocked = None
        return entry

    # ---- the dispatcher --------------------------------------------------------------

    def _fingerprint(self) -> object:
        live = tuple(sorted((a.id, a.state.value) for a in self.allocations.all_live()))
        now = self._clock()
        # A reservation whose window opens, that is used, or that returns its units changes
        # what fits as much as a release does.
        held = tuple(
            (w.id, w.used, now >= w.start) for w in self.allocations.reservations.windows()
        )
        return (live, held, id(self.config))

    def dispatch(self) -> list[int]:
        """One pass: settle entries a crash left `admitting`, expire old ones, then admit in
        priority order while they fit. The head blocks the line when capacity refuses it;
        behind it only entries that cannot delay it are backfilled (_backfill). An entry whose
        user is at a quota is skipped and keeps waiting, with why. Returns the ids admitted."""
        with self._pass:
            self._settle()
            gatequeue.end_orphans(self)
            self._expire()
            now = self._clock()
            if self._blocked is not None:
                fp, at = self._blocked
                if fp == self._fingerprint() and now - at < RETRY_BLOCKED_S:
                    return []
            self._blocked = None
            admitted: list[int] = []
            skipped: set[int] = set()
            while True:
                added = self._added
                with self.db.transaction(immediate=False) as conn:
                    ranked = self._ranked(conn, self._clock())
                if not ranked:
                    self._empty_at = added
                head = next(
                    (e for e, _ in ranked if e.state is EntryState.QUEUED and e.id not in skipped),
                    None,
                )
                if head is None:
                    if skipped and not admitted:
                        # Every entry waits for its user's quota: try again when allocations
                        # (or the config) change, not every pass (each try audits a refusal).
                        self._blocked = (self._fingerprint(), self._clock())
                    return admitted
                outcome = self._admit(head)
                if outcome == "admitted":
                    admitted.append(head.id)
                elif outcome in ("blocked", "down"):
                    if outcome == "blocked":
                        admitted += self._backfill(head, skipped)
                    self._blocked = (self._fingerprint(), self._clock())
                    return admitted
                else:  # waits for its user's quota, or failed for good
                    skipped.add(head.id)

    def _backfill(self, head: Entry, skipped: set[int]) -> list[int]:
        """Behind a head that does not fit now: admit later entries that fit now and whose
        containers must end before the head's estimated start — their user's max_runtime,
        plus gpu_hold_after_stop, from now — so that the units they take are back in time and
        they cannot delay it (issue 16 item 3). Nothing when the head's start is unknown, and
        nothing for a user without a max_runtime — except an entry that its user's own
        reservation can take now (admins' reservations, item 5)."""
        now = self._clock()
        head_eta = self._estimates([head], now)[0]
        windows = self.allocations.reservations.windows()
        if head_eta is None and not windows:
            return []
        with self.db.transaction(immediate=False) as conn:
            behind = [e for e, _ in self._ranked(conn, now)]
        free_units = frozenset(
            v.unit.unit.uuid
            for v in self.allocations.status()
            if v.allocation is None and not v.unit.drained and not v.unit.gone
        )
        ids = [e.id for e in behind]
        behind = behind[ids.index(head.id) + 1 :] if head.id in ids else []
        done: list[int] = []
        for e in behind:
            if e.state is not EntryState.QUEUED or e.id in skipped:
                continue
            end = self._latest_end(e.user, now)
            # An entry its own reservation can take now cannot delay the head: those units
            # are no one else's (scheduler/reservations.py).
            own = reserved.own_window(windows, e.user, _groups(e), e.size, free_units, now)
            if own is None and (end is None or head_eta is None or end > head_eta):
                continue
            outcome = self._admit(e, reason="reservation" if own is not None else "backfill")
            if outcome == "admitted":
                done.append(e.id)
            elif outcome == "down":
                break
            elif outcome != "blocked":
                skipped.add(e.id)
        return done

    def _latest_end(self, user: str, now: float) -> float | None:
        """When a container the user starts now must have given its units back at the latest:
        now + their max_runtime + their gpu_hold_after_stop; None without a max_runtime, or
        while they are exempt from it."""
        exempt_until = self.exemption_ends().get((user, Countdown.RUNTIME))
        if exempt_until is not None and exempt_until > now:
            return None
        try:
            limits = self.allocations.limits_for(caller_of_name(user)).limits
        except Ds01Error:
            return None
        if limits.max_runtime_s is None:
            return None
        return now + limits.max_runtime_s + limits.gpu_hold_after_stop_s

    def _admit(self, entry: Entry, reason: str = "capacity") -> str:
        if gatequeue.is_gate(entry):
            return gatequeue.admit(self, entry, reason)
        now = self._clock()
        with self.db.transaction() as conn:
            if not store.take(conn, entry.id, now):
                return "skipped"
            events.record(
                conn,
                kind="queue",
                action="admitting",
                reason=reason,
                actor=DAEMON,
                user=entry.user,
                message=f"starting queue entry {entry.id} ('{entry.name}')",
                details={"entry": entry.id},
                ts=now,
            )
        faults.point("queue.admitting")
        try:
            caller = caller_of_name(entry.user)
            view = self.containers.deploy(caller, request_of(entry.request))
        except Refusal as refusal:
            if refusal.reason in WAIT_REASONS:
                self._back(entry, refusal.what)
                return "blocked" if refusal.reason is RefusalReason.NO_CAPACITY else "quota"
            self._fail(entry, refusal)
            return "failed"
        except RuntimeUnavailable as err:
            self._back(entry, err.what)
            return "down"
        except Ds01Error as err:
            self._fail(entry, err)
            return "failed"
        except Exception:
            log.exception("starting queue entry %d failed", entry.id)
            self._fail(entry, Ds01Error("ds01d failed to start it (an internal error)"))
            return "failed"
        faults.point("queue.deployed")
        alloc = view.allocation
        self._admitted(entry, alloc.id if alloc else None, view.info.id, reason="deployed")
        units = ", ".join(u.uuid for u in alloc.units) if alloc else "no GPU"
        self._tell(
            entry.user,
            f"ds01: your queued container '{entry.name}' is running now (queue entry "
            f"{entry.id}, on {units}). Open a shell: ds01 container shell {entry.name}",
            allocation_id=alloc.id if alloc else None,
            container_id=view.info.id,
        )
        return "admitted"

    def _admitted(
        self, entry: Entry, alloc_id: int | None, container_id: str | None, reason: str
    ) -> None:
        now = self._clock()
        with self.db.transaction() as conn:
            if store.set_state(
                conn,
                entry.id,
                EntryState.ADMITTED,
                now,
                from_states=(EntryState.ADMITTING,),
                allocation_id=alloc_id,
                container_id=container_id,
            ):
                events.record(
                    conn,
                    kind="queue",
                    action="admitted",
                    reason=reason,
                    actor=DAEMON,
                    user=entry.user,
                    allocation_id=alloc_id,
                    message=f"queue entry {entry.id} ('{entry.name}') started",
                    details={"entry": entry.id, "waited_s": round(now - entry.created_at, 1)},
                    ts=now,
                )

    def _back(self, entry: Entry, why: str) -> None:
        """admitting → queued: it waits again, with why."""
        with self.db.transaction() as conn:
            store.set_state(
                conn,
                entry.id,
                EntryState.QUEUED,
                self._clock(),
                from_states=(EntryState.ADMITTING,),
                note=why,
            )

    def _fail(self, entry: Entry, err: Ds01Error) -> None:
        now = self._clock()
        why = " ".join(err.lines())
        with self.db.transaction() as conn:
            store.set_state(
                conn,
                entry.id,
                EntryState.FAILED,
                now,
                from_states=(EntryState.ADMITTING,),
                note=why,
            )
            events.record(
                conn,
                kind="queue",
                action="failed",
                reason=err.kind,
                actor=DAEMON,
                user=entry.user,
                message=f"queue entry {entry.id} ('{entry.name}') could not start: {err.what}",
                details={"entry": entry.id},
                ts=now,
            )
        self._tell(
            entry.user,
            f"ds01: your queued container '{entry.name}' could not start (queue entry "
            f"{entry.id}): {why}",
        )

    def _expire(self) -> None:
        now = self._clock()
        max_wait = self.config.queue.max_wait
        # Read first: the write lock is taken only when an entry is due (most passes: none).
        with self.db.transaction(immediate=False) as conn:
            due = [
                e
                for e in store.waiting(conn)
                if e.state is EntryState.QUEUED and now - e.created_at >= max_wait
            ]
        if not due:
            return
        gone: list[Entry] = []
        with self.db.transaction() as conn:
            for e in due:
                if store.set_state(
                    conn,
                    e.id,
                    EntryState.EXPIRED,
                    now,
                    from_states=(EntryState.QUEUED,),
                    note=f"waited longer than queue.max_wait ({max_wait} s)",
                ):
                    events.record(
                        conn,
                        kind="queue",
                        action="expired",
                        reason="max_wait",
                        actor=DAEMON,
                        user=e.user,
                        message=f"queue entry {e.id} ('{e.name}') expired after {max_wait} s",
                        details={"entry": e.id},
                        ts=now,
                    )
                    gone.append(e)
        for e in gone:
            if (w := self.waiters.of(e)) is not None:
                w.poke()  # its docker client is answered now
            self._tell(
                e.user,
                f"ds01: your queued request for '{e.name}' (queue entry {e.id}) expired after "
                f"waiting {max_wait} s without free GPUs. Deploy again when you need it.",
            )

    def _settle(self) -> None:
        """Entries a crashed ds01d left `admitting` (no pass of this process is at work on one:
        passes hold self._pass), settled by the allocation their deploy made, if any: none →
        queued again (it never began), and so for one released without ever being bound to a
        container (recovery undid the deploy); still reserved (its recovery waits for Docker)
        → wait; bound to a container → admitted, even if released since (its container was
        started once; it is never started twice)."""
        with self.db.transaction(immediate=False) as conn:
            stuck = [
                (e, store.allocation_after(conn, e.user, e.name, e.updated_at))
                for e in store.waiting(conn)
                if e.state is EntryState.ADMITTING and not gatequeue.is_gate(e)
            ]
        for e, made in stuck:
            if made is not None and made[1] == AllocState.RESERVED.value:
                continue
            # Bound to a container (activate() binds it): it ran. Released unbound: undone.
            if made is None or (made[1] == AllocState.RELEASED.value and made[2] is None):
                self._back(e, "ds01d restarted while starting it; it waits again")
                continue
            alloc_id, _, container_id = made
            self._admitted(e, alloc_id, container_id, reason="recovered")
            self._tell(
                e.user,
                f"ds01: your queued container '{e.name}' has started (queue entry {e.id}).",
                allocation_id=alloc_id,
                container_id=container_id,
            )

    def _tell(
        self,
        user: str,
        message: str,
        *,
        allocation_id: int | None = None,
        container_id: str | None = None,
    ) -> None:
        if self._notifier is None:
            return
        try:
            self._notifier.notify(
                user, TOPIC, message, allocation_id=allocation_id, container_id=container_id
            )
        except Exception:
            log.exception("telling %s about their queue entry failed", user)

    # The deploy path's bookkeeping, shared with the gate's entries (services/gatequeue.py).
    back = _back
    fail = _fail
    mark_admitted = _admitted
    tell = _tell
