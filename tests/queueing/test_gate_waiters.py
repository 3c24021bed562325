"""Docker creates the gate holds open in the queue (services/gatequeue.py), on a real state
database and the simulated 4×A100 (support.ServiceWorld), with the real dispatcher: a waiting
create is handed exactly the units reserved for it (with the gate's create intent); a client
that leaves as it is admitted, or a waiter this process does not have (ds01d restarted), leaves
nothing reserved; an entry a killed ds01d was admitting is ended; cancel and expiry wake the
waiting client; gate and deploy entries count together towards queue.max_per_user. Docker is
never reached (tests/gate/test_gate_queue.py runs the docker CLI end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import Refusal, RefusalReason
from ds01.identity import Caller
from ds01.runtime.engine import Engine
from ds01.services import gatequeue
from ds01.services.allocation import AllocationRequest
from ds01.services.containers import ContainerService
from ds01.services.gatequeue import Waiter
from ds01.services.queue import QueueService
from ds01.store import queue as store
from ds01.store.allocations import AllocationRow
from support import ServiceWorld

ROOT = Caller(uid=0, gid=0, pid=1, name="root", groups=frozenset())
FULL = Refusal(RefusalReason.NO_CAPACITY, "no free GPU")


class World:
    def __init__(self, tmp: Path) -> None:
        self.w = ServiceWorld(tmp)
        svc = self.w.svc
        containers = ContainerService(svc, Engine("unix:///nonexistent.sock"), lambda: svc.config)
        self.q = QueueService(containers, None, clock=lambda: self.w.now)
        # The machine is full: four containers of one GPU each.
        self.fill = [svc.allocate(ROOT, AllocationRequest.from_options(gpus=1)) for _ in "abcd"]

    def wait(self, waiter: Waiter | None = None) -> tuple[Waiter, list[str], int]:
        """A create waiting for one GPU, as the gate queues it: (its waiter, its wake-ups,
        its entry)."""
        woken: list[str] = []
        waiter = waiter or Waiter(lambda: woken.append("woken"))
        self.q.waiters.add(waiter)
        placed = gatequeue.enqueue(
            self.q,
            ROOT,
            AllocationRequest.from_options(gpus=1),
            name=None,
            image="img",
            refusal=FULL,
            waiter=waiter,
        )
        return waiter, woken, placed.entry.id

    def entry(self, entry_id: int) -> store.Entry:
        with self.w.db.transaction(immediate=False) as conn:
            e = store.get(conn, entry_id)
        assert e is not None
        return e

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with self.w.db.transaction(immediate=False) as conn:
            return [tuple(r) for r in conn.execute(sql)]

    def free_one(self) -> None:
        self.w.svc.release_by_daemon(self.fill.pop().id, "test")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_waiting_create_is_handed_the_units_reserved_for_it_once_capacity_frees(
    world: World,
) -> None:
    waiter, woken, entry_id = world.wait()
    assert world.q.dispatch() == []  # full: it waits
    assert waiter.row is None
    e = world.entry(entry_id)
    assert (e.state.value, e.request["origin"], e.request["image"]) == ("queued", "gate", "img")
    assert e.name.startswith("(docker run ")
    world.free_one()
    assert world.q.dispatch() == [entry_id]
    row = waiter.row
    assert row is not None and woken
    assert len(row.units) == 1 and row.state.value == "reserved"
    e = world.entry(entry_id)
    assert (e.state.value, e.allocation_id) == ("admitted", row.id)
    # The gate's create intent: a ds01d killed before the create is made is undone by recovery.
    assert world.rows(f"SELECT op FROM intents WHERE allocation_id = {row.id}") == [("create",)]


class LeavesAsAdmitted(Waiter):
    """A client that goes away between the dispatcher's first look and its hand-over."""

    @property
    def gone(self) -> bool:
        return False

    def hand_over(self, row: AllocationRow) -> bool:
        self.leave()
        return super().hand_over(row)


def test_a_client_that_leaves_as_it_is_admitted_leaves_nothing_reserved(world: World) -> None:
    waiter, _, entry_id = world.wait(LeavesAsAdmitted(lambda: None))
    world.free_one()
    assert world.q.dispatch() == []
    assert waiter.row is None
    e = world.entry(entry_id)
    assert e.state.value == "cancelled" and "went away" in (e.note or "")
    # A filler kept, the other released by the test, the admitted one released at once.
    made = world.rows("SELECT state FROM allocations ORDER BY id")
    assert made == [("reserved",)] * 3 + [("released",), ("released",)]


def test_an_entry_without_a_waiter_here_is_ended_and_never_allocated(world: World) -> None:
    waiter, _, entry_id = world.wait()
    world.q.waiters.remove(waiter)  # as in a restarted ds01d: its client died with the old one
    world.free_one()
    assert world.q.dispatch() == []
    e = world.entry(entry_id)
    assert e.state.value == "cancelled" and e.allocation_id is None
    assert world.rows("SELECT COUNT(*) FROM allocations") == [(4,)]


def test_an_entry_a_killed_ds01d_was_admitting_is_ended_as_failed(world: World) -> None:
    waiter, _, entry_id = world.wait()
    world.q.waiters.remove(waiter)
    with world.w.db.transaction() as conn:
        assert store.take(conn, entry_id, world.w.now)
    world.q.dispatch()
    e = world.entry(entry_id)
    assert e.state.value == "failed" and "restarted" in (e.note or "")


def test_cancel_and_expiry_wake_the_waiting_client(world: World) -> None:
    _, woken, first = world.wait()
    world.q.cancel(ROOT, first)
    assert woken == ["woken"] and world.entry(first).state.value == "cancelled"
    _, woken, second = world.wait()
    world.w.now += world.q.config.queue.max_wait
    world.q.dispatch()
    assert woken == ["woken"] and world.entry(second).state.value == "expired"


def test_gate_and_deploy_entries_count_together_towards_max_per_user(world: World) -> None:
    most = world.q.config.queue.max_per_user
    for _ in range(most):
        world.wait()
    with pytest.raises(Refusal) as err:
        world.wait()
    assert err.value.reason is RefusalReason.POLICY
    assert f"at most {most}" in err.value.what
