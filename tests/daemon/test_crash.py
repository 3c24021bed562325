"""kill -9 of ds01d in the middle of the concurrency load, several times: afterwards no allocation
is lost or duplicated, reservations nobody was told about expire, the units follow the machine's
inventory across restarts, and the audit log tells one consistent story.

The load is the concurrency test's (loadgen.PLAN: 32 processes × 200 cycles, root and three real
users) with --retry: a client cut off by the kill waits for the daemon to come back, and finds an
allocation whose answer it lost by its container name. Docker is not reachable here, so the
restart cannot tell which reservations a deploy was working on: they are released only when
they expire (reservation_timeout, 10s in this config).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from loadgen import (
    CONSTRAINT_SQL,
    CYCLES,
    PROCESSES,
    Checker,
    caps_for,
    connect_ro,
    constraint_sql,
    integrity,
    load_config,
    refusals_seen,
    scan,
    start_load,
    story,
    summary,
    unfinished,
    wait_all,
)

from ds01.api.schemas import AllocateIn, AllocationOut
from support import BIN, MACHINES, Daemon, Users, as_user, need, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

LOADGEN = Path(__file__).with_name("loadgen.py")
KILLS = 4
ORPHANS = 2  # reservations made right before a kill that nobody ever releases


@pytest.fixture
def crash_users(users: Users) -> Iterator[dict[str, str]]:
    """loadgen.PLAN's users, plus one who makes reservations and walks away."""
    suffix = uuid.uuid4().hex[:6]
    lab = users.group(f"ds01t-lab{suffix}")
    names = {
        "admins": users.group(f"ds01t-adm{suffix}"),
        "lab": lab,
        "ua": users.add(groups=(lab,)),
        "ub": users.add(groups=(lab,)),
        "uc": users.add(),
        "walker": users.add(),
    }
    r = as_user(names["ua"], [sys.executable, "-c", "import ds01.client"])
    need(r.returncode == 0, f"test users cannot run {sys.executable}: {r.stderr[-300:]}")
    yield names


def call_as(user: str, socket: Path, method: str, args: dict[str, Any]) -> dict[str, Any]:
    argv = [sys.executable, str(LOADGEN), "call", "--socket", str(socket), method, json.dumps(args)]
    r = as_user(user, argv)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def make_orphans(user: str, socket: Path) -> list[dict[str, Any]]:
    """ORPHANS one-slice reservations as `user`, retried while the load fills the machine."""
    made: list[dict[str, Any]] = []
    for i in range(ORPHANS):
        for _ in range(100):
            out = call_as(user, socket, "allocate", {"mig": ["1g.10gb"], "container": f"w{i}"})
            if "ok" in out:
                made.append(out["ok"])
                break
            assert out["error"]["reason"] == "no_capacity", out
            time.sleep(0.1)  # a retry, not a wait: the load frees a slice now and then
    assert len(made) == ORPHANS
    return made


def db_rows(db: Path) -> dict[int, tuple[str, str | None, str, str | None]]:
    """allocation id → (user, container, state, release_reason)."""
    conn = connect_ro(db)
    try:
        q = "SELECT id, user, container, state, release_reason FROM allocations"
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in conn.execute(q)}
    finally:
        conn.close()


def db_units(db: Path, alloc_id: int) -> list[str]:
    conn = connect_ro(db)
    try:
        q = "SELECT unit_uuid FROM allocation_units WHERE allocation_id = ?"
        return sorted(r[0] for r in conn.execute(q, (alloc_id,)))
    finally:
        conn.close()


def wait_until_released(d: Daemon, ids: list[int], timeout: float = 60.0) -> dict[int, Any]:
    def released() -> dict[int, Any] | None:
        with d.client() as c:
            rows = {i: c.allocation(i) for i in ids}
        return rows if all(a.state == "released" for a in rows.values()) else None

    return wait_for(released, f"allocations {ids} to be released", timeout)


def test_kill_9_mid_run_loses_nothing_duplicates_nothing_and_the_log_agrees(
    daemon_factory: Any, crash_users: dict[str, str], tmp_path: Path
) -> None:
    names = crash_users
    machine = tmp_path / "machine.yaml"
    original = (MACHINES / "8xH100-mig-mixed.yaml").read_text()
    machine.write_text(original)
    without_gpu7 = yaml.safe_load(original)
    assert len(without_gpu7["gpus"]) == 8
    del without_gpu7["gpus"][7]  # the last GPU: no other GPU's index (or UUID) changes

    config = load_config(names["admins"], names["lab"], reservation_timeout="10s")
    d: Daemon = daemon_factory(config=config, machine=machine)
    db = d.state_dir / "ds01.db"
    with d.client() as c:
        gpu7 = sorted(u.uuid for u in c.gpu_status().units if u.gpu_index == 7)
    assert len(gpu7) == 2

    rng = random.Random(20261128)
    orphans: list[dict[str, Any]] = []
    kills = 0
    with Checker(db, caps_for(names)) as checker:
        procs = start_load(d.socket, names, retry=True, tag="k")
        for k in range(KILLS):
            time.sleep(rng.uniform(2.0, 5.0))  # deliberately: the load runs a while, then a kill
            if k == 0:
                orphans = make_orphans(names["walker"], d.socket)
            d.kill9()
            kills += 1
            # Before any restart: every reservation that was acknowledged is on disk, whole.
            on_disk = db_rows(db)
            for o in orphans:
                assert on_disk[o["id"]][2] in ("reserved", "released")
                assert db_units(db, o["id"]) == sorted(u["uuid"] for u in o["units"])
            if k == 1:
                machine.write_text(yaml.safe_dump(without_gpu7, sort_keys=False))
            elif k == 2:
                machine.write_text(original)
            time.sleep(rng.uniform(0.0, 1.0))  # the clients meet a dead socket meanwhile
            d.start()
        wait_all(procs, timeout=600)
    print(summary(procs, checker.scans), f"unreadable: {checker.unreadable}")
    assert kills == KILLS
    assert unfinished(procs) == []
    assert sum(p.stats["cycles"] for p in procs if p.stats) == PROCESSES * CYCLES
    assert checker.problems == []
    assert checker.scans >= 3
    assert sum(p.stats["retries"] for p in procs if p.stats) > 0  # the kills hit mid-request

    # The walked-away reservations survived every kill and then expired.
    expired = wait_until_released(d, [o["id"] for o in orphans])
    assert {i: (a.user, a.state, a.release_reason) for i, a in expired.items()} == {
        o["id"]: (names["walker"], "released", "reservation_expired") for o in orphans
    }

    # Nothing lost: every allocation a client was told about exists, as that user's, for that
    # client's container. Nothing duplicated: no (user, container) got two allocations.
    rows = db_rows(db)
    for p in procs:
        assert p.stats is not None
        for aid in p.stats["allocation_ids"]:
            user, container, _, _ = rows[aid]
            assert (user, (container or "").rsplit("-", 1)[0]) == (p.user, p.prefix)
    told = {aid for p in procs if p.stats for aid in p.stats["allocation_ids"]}
    told |= {o["id"] for o in orphans}
    conn = connect_ro(db)
    dups = conn.execute(
        "SELECT user, container, COUNT(*) FROM allocations GROUP BY user, container"
        " HAVING COUNT(*) > 1"
    ).fetchall()
    unit_events = conn.execute(
        "SELECT ts, action, message FROM events WHERE kind = 'unit' ORDER BY id"
    ).fetchall()
    reserved = conn.execute(
        "SELECT ts, details FROM events WHERE kind = 'alloc' AND action = 'reserved'"
    ).fetchall()
    refused = Counter(
        conn.execute(
            "SELECT user, reason FROM events WHERE kind = 'alloc' AND action = 'refused'"
        ).fetchall()
    )
    conn.close()
    assert dups == []
    # Everything was given back; what no client was told about was released by expiry.
    assert {aid: r for aid, r in rows.items() if r[2] != "released"} == {}
    assert {r[3] for aid, r in rows.items() if aid not in told} <= {"reservation_expired"}
    assert {r[3] for r in rows.values()} <= {"loadgen", "reservation_expired"}
    # A refusal a client saw had been written first (the answer goes out after the commit).
    seen = refusals_seen(procs)
    assert {k: n for k, n in seen.items() if refused[k] < n} == {}

    # The units followed the inventory: GPU 7's two slices went with the machine file and came
    # back with it, and nothing was reserved on them in between.
    gone = [(ts, m.split()[1]) for ts, a, m in unit_events if a == "gone"]
    back = [(ts, m.split()[1]) for ts, a, m in unit_events if a == "returned"]
    assert (sorted(u for _, u in gone), sorted(u for _, u in back)) == (gpu7, gpu7)
    t_gone, t_back = max(ts for ts, _ in gone), min(ts for ts, _ in back)
    assert t_gone < t_back
    on_gpu7 = [ts for ts, details in reserved if set(json.loads(details)["units"]) & set(gpu7)]
    assert [ts for ts in on_gpu7 if t_gone <= ts <= t_back] == []
    with d.client() as c:
        assert len(c.gpu_status().units) == 19

    # The state file: constrained, intact, and a consistent story in the log.
    assert scan(db, caps_for(names)) == []
    assert integrity(db) == ["ok"]
    assert constraint_sql(db) == CONSTRAINT_SQL
    assert story(db) == []
    assert d.stop() == 0
    check = subprocess.run(
        [str(BIN / "ds01d"), "--check", "--config", str(d.config_path),
         "--state-dir", str(d.state_dir), "--run-dir", str(d.run_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (check.returncode, check.stdout.splitlines()[-1]) == (0, f"state ok: {db}")


def test_a_reservation_survives_a_kill_and_expires_after_the_restart(
    daemon_factory: Any,
) -> None:
    """The smallest crash story: reserved, kill -9, restart — still reserved on the same units
    (not lost), then released by the daemon for reservation_expired, and logged as such."""
    config = load_config("ds01t-admins", "ds01t-nolab", reservation_timeout="3s")
    d: Daemon = daemon_factory(config=config)
    with d.client() as c:
        a = c.allocate(AllocateIn(mig=["3g.40gb"], container="survivor"))
    d.kill9()
    d.start()
    with d.client() as c:
        after: AllocationOut = c.allocation(a.id)
    assert (after.state, after.units) == ("reserved", a.units)
    done = wait_until_released(d, [a.id])[a.id]
    assert (done.state, done.release_reason) == ("released", "reservation_expired")
    with d.client() as c:
        evs = [(e.action, e.reason, e.actor) for e in c.events() if e.allocation_id == a.id]
    assert evs == [
        ("reserved", "request", "root"),
        ("released", "reservation_expired", "ds01d"),
    ]
