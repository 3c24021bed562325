"""ds01d keeps the units and the live allocations in memory (store/live.py); the database stays
the truth. These tests drive a real ds01d and compare what it serves from memory — every live
allocation (`GET /v1/allocations?all=1`) and every unit with its holder and drain flag
(`GET /v1/gpu/status`) — with the database file itself, read by the test with sqlite3: after
ordinary cycles, an admin's release of another user's allocation, a reservation's expiry, a
drain, a change written to the database by another process, and kill -9 and a restart.

The next allocation is checked too: a unit the database says is free is handed out again,
and one it says is held is not.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from ds01.api.schemas import AllocateIn
from support import Daemon, Users, as_user, wait_for

LOADGEN = Path(__file__).with_name("loadgen.py")
NOWHERE = "unix:///nonexistent/ds01-test-docker.sock"


def config(reservation_timeout: str = "1h") -> str:
    return f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 100
  max_units_per_container: 8
  max_containers: 100
  allow_full_gpu: true
allocation:
  reservation_timeout: {reservation_timeout}
docker:
  host: {NOWHERE}
"""


Live = dict[int, tuple[str, str, str | None, tuple[str, ...]]]
Units = dict[str, tuple[int | None, bool]]


def from_database(d: Daemon) -> tuple[Live, Units]:
    """Live allocations (id → user, state, container, units) and units (uuid → holding
    allocation, drained), as the database file says."""
    conn = sqlite3.connect(f"file:{d.state_dir / 'ds01.db'}?mode=ro", uri=True, timeout=10)
    try:
        live: Live = {}
        for aid, user, state, container in conn.execute(
            "SELECT id, user, state, container FROM allocations WHERE state != 'released'"
        ):
            held = conn.execute(
                "SELECT unit_uuid FROM allocation_units WHERE allocation_id = ? AND live = 1",
                (aid,),
            )
            live[aid] = (user, state, container, tuple(sorted(r[0] for r in held)))
        units: Units = {}
        for uuid, drained in conn.execute("SELECT uuid, drained FROM units WHERE gone = 0"):
            units[uuid] = (None, bool(drained))
        for uuid, aid in conn.execute(
            "SELECT unit_uuid, allocation_id FROM allocation_units WHERE live = 1"
        ):
            units[uuid] = (aid, units[uuid][1])
        return live, units
    finally:
        conn.close()


def from_daemon(d: Daemon) -> tuple[Live, Units]:
    """The same, as ds01d serves it from memory."""
    with d.client() as c:
        allocations = c.allocations(all_users=True)
        status = c.gpu_status()
    live: Live = {
        a.id: (a.user, a.state, a.container, tuple(sorted(u.uuid for u in a.units)))
        for a in allocations
    }
    units: Units = {u.uuid: (u.allocation_id, u.drained) for u in status.units}
    return live, units


def assert_agree(d: Daemon) -> Live:
    db = from_database(d)
    assert from_daemon(d) == db
    return db[0]


def call_as(user: str, d: Daemon, method: str, args: dict[str, Any]) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(LOADGEN),
        "call",
        "--socket",
        str(d.socket),
        method,
        json.dumps(args),
    ]
    r = as_user(user, argv)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert "ok" in out, out
    result: dict[str, Any] = out["ok"]
    return result


def test_memory_agrees_with_the_database_through_cycles_and_a_kill_9(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config())
    kept: list[int] = []
    with d.client() as c:
        for i in range(24):
            a = c.allocate(AllocateIn(mig=["1g.10gb"], container=f"c{i}"))
            if i % 4 == 0:  # 6 kept: the machine has 9 such slices
                kept.append(a.id)
            else:
                c.release(a.id, reason="done")
            if i % 5 == 0:
                assert_agree(d)
        whole = c.allocate(AllocateIn(gpus=1, container="whole"))
    live = assert_agree(d)
    assert sorted(live) == sorted([*kept, whole.id])

    d.kill9()
    d.start()
    assert assert_agree(d) == live
    with d.client() as c:  # the restarted daemon decides on what the database holds
        c.release(kept[0], reason="after restart")
        again = c.allocate(AllocateIn(mig=["1g.10gb"], container="after-restart"))
    live = assert_agree(d)
    taken = {u for _, _, _, units in live.values() for u in units}
    assert len(taken) == sum(len(units) for _, _, _, units in live.values())  # none twice
    assert again.id in live and kept[0] not in live


def test_memory_agrees_after_an_admins_release_of_another_users_allocation(
    daemon_factory: Any, users: Users
) -> None:
    d: Daemon = daemon_factory(config=config())
    user = users.add()
    theirs = call_as(user, d, "allocate", {"mig": ["1g.10gb"], "container": "theirs"})
    with d.client() as c:
        mine = c.allocate(AllocateIn(mig=["1g.10gb"], container="mine"))
    live = assert_agree(d)
    assert live[theirs["id"]][0] == user

    with d.client() as c:  # root is an admin
        c.release(theirs["id"], reason="admin")
    live = assert_agree(d)
    assert theirs["id"] not in live and mine.id in live


def test_memory_agrees_after_a_reservation_expires(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config(reservation_timeout="1s"))
    with d.client() as c:
        a = c.allocate(AllocateIn(gpus=1, container="never-bound"))
        assert a.id in assert_agree(d)
        wait_for(lambda: c.allocation(a.id).state == "released", "the reservation to expire")
    assert a.id not in assert_agree(d)


def test_memory_agrees_after_a_drain_and_after_another_process_writes_the_database(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(config=config())
    with d.client() as c:
        a = c.allocate(AllocateIn(gpus=1, container="one"))
        b = c.allocate(AllocateIn(gpus=1, container="two"))
        gpu = str(a.units[0].gpu_index)
        assert_agree(d)
        c.drain(gpu, reason="maintenance")
        assert from_daemon(d)[1][a.units[0].uuid] == (a.id, True)
        assert_agree(d)

    # Not through ds01d at all: another process releases b in the database file.
    conn = sqlite3.connect(str(d.state_dir / "ds01.db"), isolation_level=None, timeout=10)
    try:
        conn.execute(
            "UPDATE allocations SET state = 'released', released_at = 1, release_reason = 'x'"
            " WHERE id = ?",
            (b.id,),
        )
    finally:
        conn.close()
    live = assert_agree(d)
    assert b.id not in live and a.id in live
    with d.client() as c:
        again = c.allocate(AllocateIn(gpus=1, container="three"))
    assert again.units[0].uuid != a.units[0].uuid
    assert_agree(d)
