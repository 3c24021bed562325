"""The lifecycle's records on a real database (store/activity.py, services/activitybook.py): an
idle run survives a reopen of the file, a new activation starts a new one, activity cancels the
idle warnings with one event, records of allocations that are no longer active go, and a clock
step moves every stored time."""

from __future__ import annotations

from pathlib import Path

from ds01.config import parse_config_text
from ds01.identity import Caller
from ds01.inventory.select import open_backend, resolve_sim
from ds01.lifecycle.countdown import observe
from ds01.model.activity import Countdown, WarningRecord
from ds01.scheduler.snapshot import RequestKind
from ds01.services.activitybook import ActivityBook
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.store import activity as store
from ds01.store import events
from ds01.store.db import Database

T0 = 1_800_000_000.0
ROOT = Caller(uid=0, gid=0, pid=0, name="root", groups=frozenset())
CONFIG = (
    "defaults:\n  max_gpueq: 8\n  max_containers: 8\n  allow_full_gpu: true\n"
    "  gpu_hold_after_stop: 1h\n"
)


def _service(path: Path, now: list[float]) -> AllocationService:
    config = parse_config_text(CONFIG, "test.yaml")
    svc = AllocationService(Database(path), lambda: config, clock=lambda: now[0])
    backend = open_backend("sim", resolve_sim("4xA100-40GB"))
    svc.sync_units(backend.sample())
    backend.close()
    return svc


def test_an_idle_run_survives_a_reopen_and_activity_cancels_its_warnings(tmp_path: Path) -> None:
    now = [T0]
    svc = _service(tmp_path / "ds01.db", now)
    a = svc.allocate(ROOT, AllocationRequest(RequestKind.GPUS, count=1, container="c"))
    row = svc.activate(a.id, container_id="c" * 64, actor="root", reason="deployed")
    book = ActivityBook(svc.db)
    for i in range(3):
        seen = book.observe(row, lambda r, i=i: observe(r, False, "idle", T0 + i, T0 + i), T0 + i)
    assert (seen.record.idle_run, seen.record.idle_since) == (3, T0)
    with svc.db.transaction() as conn:
        store.add_warning(conn, WarningRecord(a.id, Countdown.IDLE, "50%", T0 + 9, T0 + 5, True))
    svc.db.close()

    svc = _service(tmp_path / "ds01.db", now)  # ds01d restarted
    book = ActivityBook(svc.db)
    seen = book.observe(row, lambda r: observe(r, True, "busy", T0 + 3, T0 + 3), T0 + 3)
    assert (seen.record.idle_run, seen.record.idle_since, seen.cancelled) == (0, None, 1)
    assert seen.warnings == []
    assert [v.signal for v in seen.record.recent] == ["idle", "idle", "idle", "busy"]
    with svc.db.transaction(immediate=False) as conn:
        cleared = events.query(conn, allocation_id=a.id, kind="container")
    assert [(e.action, e.reason) for e in cleared] == [("idle_cleared", "activity")]


def test_a_new_activation_starts_a_new_idle_run_and_inactive_records_go(tmp_path: Path) -> None:
    now = [T0]
    svc = _service(tmp_path / "ds01.db", now)
    a = svc.allocate(ROOT, AllocationRequest(RequestKind.GPUS, count=1, container="c"))
    row = svc.activate(a.id, container_id="c" * 64, actor="root", reason="deployed")
    book = ActivityBook(svc.db)
    book.observe(row, lambda r: observe(r, False, "idle", T0, T0), T0)
    now[0] = T0 + 10
    svc.hold(a.id, actor="root", reason="stopped")
    assert book.forget_inactive() == 1
    now[0] = T0 + 20
    again = svc.activate(a.id, container_id="c" * 64, actor="root", reason="started")
    seen = book.observe(again, lambda r: r, T0 + 20)
    assert (seen.record.active_since, seen.record.runtime_from) == (T0 + 20, T0)
    assert seen.record.idle_since is None


def test_a_clock_step_moves_the_countdowns_but_not_the_activation(tmp_path: Path) -> None:
    now = [T0]
    svc = _service(tmp_path / "ds01.db", now)
    a = svc.allocate(ROOT, AllocationRequest(RequestKind.GPUS, count=1, container="c"))
    row = svc.activate(a.id, container_id="c" * 64, actor="root", reason="deployed")
    book = ActivityBook(svc.db)
    book.observe(row, lambda r: observe(r, False, "idle", T0, T0 + 1), T0 + 1)
    with svc.db.transaction() as conn:
        store.add_warning(conn, WarningRecord(a.id, Countdown.IDLE, "50%", T0 + 9, T0 + 5, True))
    assert book.shift(3600.0) == 1
    with svc.db.transaction(immediate=False) as conn:
        rec = store.get(conn, a.id)
        (w,) = store.warnings(conn, a.id)
    assert rec is not None
    assert (rec.active_since, rec.runtime_from, rec.idle_since) == (T0, T0 + 3600, T0 + 3601)
    assert (w.deadline, w.done_at) == (T0 + 3609, T0 + 3605)
