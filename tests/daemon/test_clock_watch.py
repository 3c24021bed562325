"""The clock-step watch (services/clock.py) with driven clocks on a real database: the pure
detector's threshold and frame, every live deadline moved in one transaction with its audit
event, nothing else touched, a failed pass retried, and the in-memory deadlines (a grant cache,
a pending SIGKILL) moved with the stored ones. tests/daemon/test_clock_step.py steps a real
ds01d's clock with libfaketime."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ds01.config import parse_config_text
from ds01.identity import Caller
from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.notify import Notifier
from ds01.services.allocation import AllocationService
from ds01.services.clock import ClockWatch, StepDetector, describe_step
from ds01.services.grants import GrantService
from ds01.services.hostproc import HostProcess, HostProcessWatch, ProcStatus
from ds01.store import allocations as allocs
from ds01.store import events
from ds01.store import grants as grants_store
from ds01.store import units as units_store
from ds01.store.db import Database

ROOT = Caller(uid=0, gid=0, pid=1, name="root", groups=frozenset())
T0 = 1_000_000.0
HOUR = 3600.0


def gpu(i: int) -> Unit:
    uuid = f"GPU-{i:08d}-0000-0000-0000-000000000000"
    return Unit(
        uuid=uuid,
        kind=UnitKind.GPU,
        gpu_uuid=uuid,
        gpu_index=i,
        model="NVIDIA H100 80GB HBM3",
        memory_total_mib=81559,
        gpueq=GpuEq(1),
    )


class Clocks:
    """A wall clock and a steady clock, moved together (time passing) or apart (a step)."""

    def __init__(self) -> None:
        self.wall_t = T0
        self.steady_t = 500.0

    def wall(self) -> float:
        return self.wall_t

    def steady(self) -> float:
        return self.steady_t

    def pass_(self, s: float) -> None:
        self.wall_t += s
        self.steady_t += s

    def step(self, s: float) -> None:
        self.wall_t += s


# ---- the pure detector -----------------------------------------------------------------------


def test_time_passing_and_slewing_are_not_steps() -> None:
    d = StepDetector(wall=T0, steady=10.0)
    assert d.step(T0 + 3600, 3610.0) is None  # an hour passed on both
    assert d.step(T0 + 1.5, 10.0) is None  # 1.5 s of drift: under the 2 s threshold
    assert d.frame_time(T0 + 1.5, 10.0) == T0 + 1.5


@pytest.mark.parametrize("jump", [2.0, 7200.0, -2.0, -7200.0])
def test_a_jump_of_the_threshold_or_more_either_way_is_a_step(jump: float) -> None:
    d = StepDetector(wall=T0, steady=10.0)
    step = d.step(T0 + 5 + jump, 15.0)
    assert step is not None and step.step_s == pytest.approx(jump)
    assert step.wall == T0 + 5 + jump
    # Until rebased, the time in the old frame is the wall clock less the step.
    assert d.frame_time(T0 + 5 + jump, 15.0) == pytest.approx(T0 + 5)
    d.rebase(T0 + 5 + jump, 15.0)
    assert d.step(T0 + 6 + jump, 16.0) is None


def test_steps_are_described_with_their_direction_and_size() -> None:
    assert describe_step(7200.4) == "forward by 2h 0m 0s"
    assert describe_step(-303.0) == "backward by 5m 3s"
    assert describe_step(2.5) == "forward by 2.5s"


# ---- the watch on a database -----------------------------------------------------------------


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clocks = Clocks()
        self.db = Database(tmp / "ds01.db")
        self.watch = ClockWatch(self.db, wall=self.clocks.wall, steady=self.clocks.steady)
        self.config = parse_config_text(
            "host:\n  grant_warnings: [1h, 10m]\n  grant_kill_grace: 30s\n", "test.yaml"
        )
        self.allocs = AllocationService(self.db, lambda: self.config, clock=self.watch.now)
        with self.db.transaction() as conn:
            units_store.sync(conn, [gpu(i) for i in range(4)], now=T0)

    def reserve(self, i: int, expires_in: float | None) -> int:
        now = self.watch.now()
        with self.db.transaction() as conn:
            return allocs.insert(
                conn,
                user="alice",
                uid=None,
                group=None,
                container=f"c{i}",
                request={},
                units=(gpu(i),),
                now=now,
                expires_at=None if expires_in is None else now + expires_in,
            )

    def hold(self, alloc_id: int, hold_for: float) -> None:
        now = self.watch.now()
        with self.db.transaction() as conn:
            allocs.transition(conn, alloc_id, AllocState.ACTIVE, now)
            allocs.transition(conn, alloc_id, AllocState.HELD, now, hold_until=now + hold_for)

    def alloc(self, alloc_id: int) -> allocs.AllocationRow:
        with self.db.transaction(immediate=False) as conn:
            row = allocs.get(conn, alloc_id)
        assert row is not None
        return row

    def grants(self) -> GrantService:
        notifier = Notifier(
            self.tmp / "notes.log",
            utmp=self.tmp / "no-utmp",
            pts_dir=self.tmp,
            clock=self.watch.now,
        )
        return GrantService(
            self.db,
            self.allocs,
            self.tmp / "run",
            notifier,
            clock=self.watch.now,
            manage_group=False,
            exists=lambda u: True,
        )

    def clock_events(self) -> list[events.Event]:
        with self.db.transaction(immediate=False) as conn:
            return events.query(conn, kind="daemon")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_step_moves_every_live_deadline_once_with_one_event(world: World) -> None:
    reserved = world.reserve(0, expires_in=120)
    held = world.reserve(1, expires_in=120)
    world.hold(held, hold_for=HOUR)
    released = world.reserve(2, expires_in=120)
    with world.db.transaction() as conn:
        allocs.transition(conn, released, AllocState.RELEASED, T0, release_reason="test")
    svc = world.grants()
    timed = svc.grant(ROOT, "bob", duration="30m", permanent=False, reason="profiling")
    forever = svc.grant(ROOT, "carol", duration=None, permanent=True, reason="admin")
    before = {i: world.alloc(i) for i in (reserved, held, released)}
    seen: list[float] = []
    world.watch.on_step.append(seen.append)

    world.clocks.pass_(10)
    assert world.watch.check() is None  # time passing: nothing moves
    world.clocks.step(2 * HOUR)
    assert world.watch.now() == T0 + 10  # not applied yet: still the deadlines' frame
    assert world.allocs.expire_due() == []  # expiry does not act on the stepped clock
    step = world.watch.check()

    assert step is not None and step.step_s == 2 * HOUR
    assert world.watch.now() == T0 + 10 + 2 * HOUR
    assert seen == [2 * HOUR]
    expires, until = before[reserved].expires_at, before[held].hold_until
    assert expires is not None and until is not None
    assert world.alloc(reserved).expires_at == expires + 2 * HOUR
    assert world.alloc(held).hold_until == until + 2 * HOUR
    assert world.alloc(released) == before[released]  # history is not rewritten
    assert world.alloc(reserved).created_at == before[reserved].created_at
    with world.db.transaction(immediate=False) as conn:
        g = grants_store.get(conn, timed.id)
        p = grants_store.get(conn, forever.id)
    assert g is not None and timed.until is not None
    assert (g.created_at, g.until) == (timed.created_at + 2 * HOUR, timed.until + 2 * HOUR)
    assert p == forever
    (ev,) = world.clock_events()
    assert (ev.action, ev.reason, ev.actor, ev.ts) == (
        "clock_step",
        "clock_step",
        "ds01d",
        T0 + 10 + 2 * HOUR,
    )
    assert ev.details == {"step_s": 7200.0, "allocations": 2, "grants": 1}
    assert ev.message == (
        "the wall clock jumped forward by 2h 0m 0s; 2 allocation deadline(s) and 1 grant(s)"
        " moved with it and keep the time they had left"
    )
    world.clocks.pass_(1)
    assert world.watch.check() is None  # logged and applied once
    assert len(world.clock_events()) == 1


def test_after_a_backward_step_a_reservation_ends_on_time(world: World) -> None:
    a = world.reserve(0, expires_in=120)
    world.clocks.pass_(60)
    world.clocks.step(-2 * HOUR)
    assert world.watch.check() is not None
    world.clocks.pass_(59)
    assert world.allocs.expire_due() == []
    world.clocks.pass_(1)
    assert world.allocs.expire_due() == [a]


def test_an_expiry_pass_that_waited_for_the_step_reads_the_clock_after_it(world: World) -> None:
    """check() moves the deadlines inside a transaction. A pass that was waiting for the
    database meanwhile must read the clock after it, in the new frame: one that read it before
    waiting would compare the old frame's time with the moved deadlines, and a backward step
    would release every reservation and hold at once."""
    a = world.reserve(0, expires_in=120)
    world.clocks.pass_(60)
    world.clocks.step(-2 * HOUR)
    released: list[int] = []
    with world.db.transaction():  # the step's pass holds the database...
        waiting = threading.Thread(target=lambda: released.extend(world.allocs.expire_due()))
        waiting.start()
        time.sleep(0.3)  # ...while the expiry pass comes and waits for it
        assert world.watch.check() is not None
    waiting.join(30)
    assert (waiting.is_alive(), released, world.alloc(a).state) == (
        False,
        [],
        AllocState.RESERVED,
    )


def test_a_step_waits_for_a_held_pass_which_keeps_its_frame_throughout(world: World) -> None:
    """A pass that compares the time with stored times over several transactions (the
    lifecycle's countdowns) holds the frame: a step seen meanwhile is not applied until the
    pass ends, so the pass's time and what it reads stay in one frame; the next check after it
    applies the step."""
    a = world.reserve(0, expires_in=120)
    world.clocks.pass_(60)
    world.clocks.step(-2 * HOUR)
    with world.watch.held() as now:
        assert now == T0 + 60
        assert world.watch.check() is None  # not while the pass runs
        assert world.watch.now() == T0 + 60
        expires = world.alloc(a).expires_at
        assert expires is not None and expires - now == 60  # one frame: 60 s left
    assert world.clock_events() == []
    step = world.watch.check()
    assert step is not None and step.step_s == -2 * HOUR
    assert world.watch.now() == T0 + 60 - 2 * HOUR


def test_a_pass_that_begins_while_a_step_is_applied_waits_and_starts_in_the_new_frame(
    world: World,
) -> None:
    a = world.reserve(0, expires_in=120)
    world.clocks.step(HOUR)
    seen: list[float] = []

    def lifecycle_pass() -> None:
        with world.watch.held() as now:
            expires = world.alloc(a).expires_at
            assert expires is not None
            seen.extend([now, expires - now])

    with world.db.transaction():  # the step's application waits for the database...
        applying = threading.Thread(target=world.watch.check)
        applying.start()
        time.sleep(0.3)
        passing = threading.Thread(target=lifecycle_pass)
        passing.start()  # ...and the pass that begins meanwhile waits for the step
        time.sleep(0.3)
        assert seen == []
    applying.join(30)
    passing.join(30)
    assert (applying.is_alive(), passing.is_alive()) == (False, False)
    assert seen == [T0 + HOUR, 120]  # the new frame, and the deadline moved with it


def test_a_pass_that_fails_changes_nothing_and_the_next_one_applies_the_step(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = world.reserve(0, expires_in=120)
    expires = world.alloc(a).expires_at
    assert expires is not None
    world.clocks.step(HOUR)

    def broken(conn: object, step_s: float) -> int:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(allocs, "shift_deadlines", broken)
    with pytest.raises(RuntimeError):
        world.watch.check()
    assert world.alloc(a).expires_at == expires
    assert world.watch.now() == T0  # still the old frame: nothing acts on the stepped clock
    assert world.clock_events() == []
    monkeypatch.undo()
    step = world.watch.check()
    assert step is not None and step.step_s == HOUR
    assert world.alloc(a).expires_at == expires + HOUR


def test_the_grant_cache_moves_with_the_step_before_the_next_pass(world: World) -> None:
    svc = world.grants()
    world.watch.on_step.append(svc.clock_stepped)
    svc.grant(ROOT, "bob", duration="30m", permanent=False, reason="profiling")
    svc.tick()
    world.clocks.step(2 * HOUR)
    assert world.watch.check() is not None
    assert svc.has_host_access("bob")  # from the cache, before any tick re-reads it
    live = svc.live_grant("bob")
    assert live is not None and live.until == T0 + 1800 + 2 * HOUR
    # Its length is kept, so neither warning (1 h is longer than the grant) fires early.
    assert svc.tick() == []
    with world.db.transaction(immediate=False) as conn:
        assert [e.action for e in events.query(conn, kind="grant")] == ["granted"]


def test_a_pending_sigkill_keeps_its_grace_over_a_step(world: World) -> None:
    svc = world.grants()
    notifier = Notifier(world.tmp / "notes.log", utmp=world.tmp / "no-utmp", pts_dir=world.tmp)
    watch = HostProcessWatch(world.db, world.allocs, svc, notifier, clock=world.watch.now)
    t = HostProcess(
        pid=4242,
        started=1,
        uid=1001,
        user="bob",
        name="python",
        status=ProcStatus.VIOLATION,
        first_seen=T0,
        signalled_at=T0,
        kill_at=T0 + 30,
    )
    watch._tracked = {t.key: t}
    watch.clock_stepped(-HOUR)
    assert (t.first_seen, t.signalled_at, t.kill_at) == (T0 - HOUR, T0 - HOUR, T0 + 30 - HOUR)
