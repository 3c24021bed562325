"""AllocationService.on_freed — what wakes the queue's dispatcher as soon as units are free: its
hooks run once per committed transaction that released an allocation, whoever released it
(a user, a stop with no hold, the expiry), and never for one that freed nothing or rolled
back. On a real SQLite database and the simulated 4×A100."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.identity import Caller
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest
from support import ServiceWorld

ROOT = Caller(uid=0, gid=0, pid=0, name="root", groups=frozenset())
GPU1 = AllocationRequest(RequestKind.GPUS, count=1)


class World(ServiceWorld):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.freed: list[bool] = []  # one entry per hook call: was the release committed then?
        self.svc.on_freed.append(lambda: self.freed.append(not self.db.conn.in_transaction))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_users_release_wakes_once_after_its_commit(world: World) -> None:
    a = world.svc.allocate(ROOT, GPU1)
    assert world.freed == []  # an allocation frees nothing
    world.svc.release(ROOT, a.id, "user_release")
    assert world.freed == [True]
    world.svc.release(ROOT, a.id, "again")  # already released: nothing freed
    assert world.freed == [True]


def test_a_stop_without_hold_and_an_expiry_wake_too(world: World) -> None:
    a = world.svc.allocate(ROOT, GPU1)
    world.svc.activate(a.id, container_id="c" * 64, actor="root", reason="deployed")
    world.svc.hold(a.id, actor="root", reason="stopped")  # gpu_hold_after_stop 0s: released
    assert world.freed == [True]
    world.svc.allocate(ROOT, GPU1)
    world.now += 121  # past the 2 min reservation timeout
    assert len(world.svc.expire_due()) == 1
    assert world.freed == [True, True]


def test_a_release_rolled_back_wakes_nobody(world: World) -> None:
    a = world.svc.allocate(ROOT, GPU1)

    class Undo(Exception):
        pass

    # The release inside a transaction of the caller's that then fails: nothing committed.
    with pytest.raises(Undo), world.db.transaction():
        world.svc.release(ROOT, a.id, "user_release")
        raise Undo
    assert world.freed == []
    assert world.svc.get(ROOT, a.id).state.value == "reserved"
