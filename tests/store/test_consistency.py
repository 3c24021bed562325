"""The state invariants ds01d checks itself (store/consistency.py, docs/allocation.md): each one is
broken on a real SQLite database the way a bug, an admin's manual edit or a damaged file would,
and the check names it; a sound history gives no problem; a problem is audited once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ds01.identity import Caller
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest
from ds01.store import allocations as allocs
from ds01.store import consistency
from ds01.store.intents import Intent, IntentOp
from support import ServiceWorld

T0 = ServiceWorld.T0
ROOT = Caller(uid=0, gid=0, pid=0, name="root", groups=frozenset())
GPU1 = AllocationRequest(RequestKind.GPUS, count=1)


class World(ServiceWorld):
    def problems(self, *, all_allocations: bool = False) -> list[consistency.Problem]:
        with self.db.transaction(immediate=False) as conn:
            return consistency.check(conn, self.now, all_allocations=all_allocations)

    def raw(self, sql: str, *args: object) -> None:
        with self.db.transaction() as conn:
            conn.execute(sql, args)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_whole_history_of_moves_is_sound(world: World) -> None:
    a = world.svc.allocate(ROOT, GPU1)
    world.svc.activate(a.id, container_id="c" * 64, actor="root", reason="deployed")
    b = world.svc.allocate(ROOT, GPU1)
    world.svc.release(ROOT, b.id, "user_release")
    world.svc.hold(a.id, actor="root", reason="stopped")  # hold 0s: released at once
    world.now += 3600
    assert world.svc.expire_due() == []
    assert world.problems(all_allocations=True) == []


def test_i1_a_unit_in_two_live_allocations_is_found_without_the_index(world: World) -> None:
    a = world.svc.allocate(ROOT, GPU1)
    # What a damaged file or a hand edit could hold: the index that forbids it is gone.
    world.raw("DROP INDEX one_live_allocation_per_unit")
    with world.db.transaction() as conn:
        allocs.insert(
            conn,
            user="mallory",
            uid=None,
            group=None,
            container=None,
            request={},
            units=a.units,
            now=world.now,
            expires_at=world.now + 120,
        )
    found = [p for p in world.problems() if p.invariant == "I1"]
    assert [str(p) for p in found] == [
        f"I1: unit {a.units[0].uuid} is in more than one live allocation"
    ]


def test_i3_a_reservation_past_its_timeout_is_a_problem_unless_an_operation_holds_it(
    world: World,
) -> None:
    missed = world.svc.allocate(ROOT, GPU1)
    working = world.svc.allocate(
        ROOT, GPU1, intent=Intent(IntentOp.DEPLOY, "root", docker_name="root.job")
    )
    world.now += 120 + consistency.EXPIRY_SLACK_S + 5
    found = world.problems()
    assert [p.invariant for p in found] == ["I3"]
    assert f"allocation {missed.id} is still reserved" in found[0].message
    assert str(working.id) not in found[0].message
    # Expiry repairs the one nobody works on; the one with an intent waits for recovery.
    assert world.svc.expire_due() == [missed.id]
    assert world.problems() == []


def test_i5_an_audit_log_that_does_not_end_in_the_state_is_a_problem(world: World) -> None:
    a = world.svc.allocate(ROOT, GPU1)
    world.svc.activate(a.id, container_id="c" * 64, actor="root", reason="deployed")
    b = world.svc.allocate(ROOT, GPU1)
    world.svc.release(ROOT, b.id, "user_release")
    assert world.problems(all_allocations=True) == []
    # A forged or lost event: the log says something that did not happen, or not what did.
    world.raw(
        "INSERT INTO events (ts, kind, action, actor, user, allocation_id, reason)"
        " VALUES (?, 'alloc', 'released', 'root', 'root', ?, 'forged')",
        world.now,
        a.id,
    )
    world.raw("DELETE FROM events WHERE allocation_id = ? AND action = 'released'", b.id)
    live_only = [str(p) for p in world.problems()]
    assert live_only == [f"I5: allocation {a.id} is active but its audit log ends with 'released'"]
    everything = [str(p) for p in world.problems(all_allocations=True)]
    assert everything == [
        f"I5: allocation {a.id} is active but its audit log ends with 'released'",
        f"I5: allocation {b.id} is released but its audit log ends with 'reserved'",
    ]


def test_a_problem_is_audited_once_and_again_only_when_it_comes_back(world: World) -> None:
    a = world.svc.allocate(ROOT, GPU1)
    world.raw("DELETE FROM events WHERE allocation_id = ?", a.id)

    def audited() -> int:
        with world.db.transaction(immediate=False) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM events WHERE kind = 'daemon' AND action = 'invariant'"
            ).fetchone()
        return int(row[0])

    first = world.svc.check_state(set())
    assert [p.invariant for p in first] == ["I5"]
    assert audited() == 1
    again = world.svc.check_state({str(p) for p in first})
    assert again == first
    assert audited() == 1


def test_the_check_reads_only(world: World, tmp_path: Path) -> None:
    world.svc.allocate(ROOT, GPU1)
    world.db.close()
    conn = sqlite3.connect(f"file:{tmp_path / 'ds01.db'}?mode=ro", uri=True)
    try:
        assert consistency.check(conn, T0, all_allocations=True) == []
    finally:
        conn.close()
