"""Docker creates that wait in the queue (issue 16 item 1, the gate's part; `gate.queue: wait`).

A create through the gate that quota allows but capacity does not becomes a queue entry like
a `deploy --queue` one (same priority, max_per_user, max_wait, `ds01 queue`, explain, cancel),
marked `origin: gate` in its request. Its docker client waits on its open connection meanwhile;
the gate keeps a Waiter for it in this process. The dispatcher admits such an entry by
reserving its units (with the gate's create intent) and handing the allocation to the Waiter;
the gate then makes the container on exactly those units.

Nothing leaks, by these rules:
- A Waiter exists only in the ds01d process whose gate holds the connection, and is registered
  before its entry is committed. An entry whose Waiter is not registered here (ds01d restarted:
  the client's connection died with the old process; or the client left) is never admitted:
  the dispatcher ends it (`cancelled`) instead.
- The hand-over and the client's leaving are decided under the Waiter's lock: an allocation
  handed to a Waiter whose client has gone is released by whoever sees it second.
- An entry a killed ds01d left `admitting` is ended (`failed`); the reservation it may have
  made carries the gate's create intent, which recovery settles at start-up (no container:
  released) — it does not wait for reservation_timeout, and nobody else can use it meanwhile.

Must not touch asyncio (the gate's side wakes its own loop through the Waiter's callback) nor
decide order or policy (services/queue.py and queue/priority.py do).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ds01 import faults
from ds01.errors import Ds01Error, Refusal, RefusalReason
from ds01.identity import Caller, caller_of_name
from ds01.services.allocation import AllocationRequest
from ds01.store import events
from ds01.store import queue as store
from ds01.store.allocations import AllocationRow
from ds01.store.intents import Intent, IntentOp
from ds01.store.queue import Entry, EntryState

if TYPE_CHECKING:
    from ds01.services.queue import Placed, QueueService

log = logging.getLogger("ds01d.queue")

ORIGIN = "gate"
GONE_NOTE = "its docker client went away (closed its connection, or ds01d restarted)"


def is_gate(entry: Entry) -> bool:
    return entry.request.get("origin") == ORIGIN


def origin_of(request: dict[str, Any]) -> str:
    """Where an entry came from: 'gate' (a docker create held open) or 'deploy'."""
    return ORIGIN if request.get("origin") == ORIGIN else "deploy"


class Waiter:
    """One docker client waiting on its open connection for its entry to be admitted.

    `wake` is called (from any thread) whenever something happened that the waiting side must
    look at: a hand-over, a failure, the entry cancelled or expired."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.token = secrets.token_hex(8)
        self._wake = wake
        self._lock = threading.Lock()
        self._gone = False
        self.row: AllocationRow | None = None
        self.error: Ds01Error | None = None

    @property
    def gone(self) -> bool:
        return self._gone

    def hand_over(self, row: AllocationRow) -> bool:
        """The dispatcher's admission; False when the client has gone (the caller releases)."""
        with self._lock:
            if self._gone:
                return False
            self.row = row
        self._wake()
        return True

    def fail(self, err: Ds01Error) -> None:
        self.error = err
        self._wake()

    def poke(self) -> None:
        self._wake()

    def leave(self) -> AllocationRow | None:
        """The client went away: nothing is handed over any more. Returns what was handed
        over already (the caller releases it)."""
        with self._lock:
            self._gone = True
            return self.row


class Waiters:
    """The Waiters of this process, by token (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, Waiter] = {}

    def add(self, waiter: Waiter) -> None:
        with self._lock:
            self._by_token[waiter.token] = waiter

    def remove(self, waiter: Waiter) -> None:
        with self._lock:
            self._by_token.pop(waiter.token, None)

    def of(self, entry: Entry) -> Waiter | None:
        token = entry.request.get("waiter")
        with self._lock:
            return self._by_token.get(token) if isinstance(token, str) else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_token)


def enqueue(
    q: QueueService,
    caller: Caller,
    req: AllocationRequest,
    *,
    name: str | None,
    image: str,
    refusal: Refusal,
    waiter: Waiter,
) -> Placed:
    """Queue a gate create that capacity refused; the same limits as deploy --queue (quota was
    checked first: only no_capacity is queued). An unnamed create is listed under a name of
    its own (an entry's name is unique among its user's waiting entries)."""
    if refusal.reason is not RefusalReason.NO_CAPACITY:
        raise refusal
    request: dict[str, Any] = {
        "origin": ORIGIN,
        "waiter": waiter.token,
        "name": name,
        "image": image,
        "allocation": req.to_json(),
    }
    shown = name or f"(docker run {waiter.token[:6]})"
    placed = q.add_entry(caller, shown, request, req, refusal)
    q.tell(
        caller.name,
        f"ds01: no GPU is free for your docker create of '{image}': it waits in the queue as "
        f"entry {placed.entry.id} (position {placed.position}); docker shows nothing until it "
        f"starts. See it with 'ds01 queue'; Ctrl-C (or 'ds01 queue cancel "
        f"{placed.entry.id}') leaves the queue.",
    )
    return placed


def admit(q: QueueService, entry: Entry, reason: str) -> str:
    """The dispatcher's admission of a gate entry: reserve its units with the gate's create
    intent and hand them to its waiting client. Outcomes as QueueService._admit's."""
    from ds01.services.queue import DAEMON, WAIT_REASONS

    waiter = q.waiters.of(entry)
    if waiter is None or waiter.gone:
        end(q, entry, EntryState.CANCELLED, (EntryState.QUEUED,), "client_gone", GONE_NOTE)
        return "skipped"
    now = q.now()
    with q.db.transaction() as conn:
        if not store.take(conn, entry.id, now):
            return "skipped"
        events.record(
            conn,
            kind="queue",
            action="admitting",
            reason=reason,
            actor=DAEMON,
            user=entry.user,
            message=f"starting queue entry {entry.id} ('{entry.name}', docker create)",
            details={"entry": entry.id, "origin": ORIGIN},
            ts=now,
        )
    try:
        caller = caller_of_name(entry.user)
        name = entry.request.get("name")
        req = AllocationRequest.from_json(entry.request["allocation"], name or None)
        row = q.allocations.allocate(caller, req, intent=Intent(IntentOp.CREATE, entry.user))
    except Refusal as refusal:
        if refusal.reason in WAIT_REASONS:
            q.back(entry, refusal.what)
            return "blocked" if refusal.reason is RefusalReason.NO_CAPACITY else "quota"
        q.fail(entry, refusal)
        waiter.fail(refusal)
        return "failed"
    except Ds01Error as err:
        q.fail(entry, err)
        waiter.fail(err)
        return "failed"
    except Exception:
        log.exception("admitting queue entry %d (docker create) failed", entry.id)
        internal = Ds01Error("ds01d failed to admit it (an internal error)")
        q.fail(entry, internal)
        waiter.fail(internal)
        return "failed"
    faults.point("queue_gate.reserved")
    if not waiter.hand_over(row):
        q.allocations.release_by_daemon(row.id, "client_gone")
        end(q, entry, EntryState.CANCELLED, (EntryState.ADMITTING,), "client_gone", GONE_NOTE)
        return "skipped"
    q.mark_admitted(entry, row.id, None, reason="handed_over")
    units = ", ".join(u.uuid for u in row.units) or "no GPU"
    q.tell(
        entry.user,
        f"ds01: your waiting docker create (queue entry {entry.id}) got {units}; its "
        "container is being made now.",
        allocation_id=row.id,
    )
    return "admitted"


def end_orphans(q: QueueService) -> None:
    """Gate entries nobody waits for any more (called inside a dispatch pass, so no admission
    of this process is half-way): queued ones with no Waiter here → cancelled; admitting ones
    (a killed ds01d was admitting them: its client's connection died with it) → failed, their
    reservation, if made, left to recovery (the create intent of a dead process)."""
    with q.db.transaction(immediate=False) as conn:
        stale = [
            e
            for e in store.waiting(conn)
            if is_gate(e) and (e.state is EntryState.ADMITTING or q.waiters.of(e) is None)
        ]
    for e in stale:
        if e.state is EntryState.ADMITTING:
            end(
                q,
                e,
                EntryState.FAILED,
                (EntryState.ADMITTING,),
                "restarted",
                "ds01d restarted while admitting it; its docker client's connection ended "
                "with it: run it again",
            )
        else:
            end(q, e, EntryState.CANCELLED, (EntryState.QUEUED,), "client_gone", GONE_NOTE)


def client_left(q: QueueService, entry_id: int) -> None:
    """The waiting client went away (Ctrl-C, closed connection, ds01d stopping): its entry is
    cancelled if it still waits (one being admitted right now is ended by the dispatcher,
    which sees the Waiter gone)."""
    with q.db.transaction(immediate=False) as conn:
        entry = store.get(conn, entry_id)
    if entry is not None:
        end(q, entry, EntryState.CANCELLED, (EntryState.QUEUED,), "client_gone", GONE_NOTE)


def end(
    q: QueueService,
    entry: Entry,
    state: EntryState,
    from_states: tuple[EntryState, ...],
    reason: str,
    note: str,
) -> bool:
    from ds01.services.queue import DAEMON

    now = q.now()
    with q.db.transaction() as conn:
        done = store.set_state(conn, entry.id, state, now, from_states=from_states, note=note)
        if done:
            events.record(
                conn,
                kind="queue",
                action=state.value,
                reason=reason,
                actor=DAEMON,
                user=entry.user,
                message=f"queue entry {entry.id} ('{entry.name}', docker create) {state.value}:"
                f" {note}",
                details={"entry": entry.id, "origin": ORIGIN},
                ts=now,
            )
    return done


def current(q: QueueService, entry_id: int) -> Entry | None:
    with q.db.transaction(immediate=False) as conn:
        return store.get(conn, entry_id)


def record_container(q: QueueService, entry_id: int, container_id: str) -> None:
    """The container the gate made for an admitted entry (shown by `ds01 queue`)."""
    with q.db.transaction() as conn:
        store.set_container(conn, entry_id, container_id)
