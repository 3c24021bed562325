"""Many real client processes, some as real Unix users, against one ds01d on a simulated 8×H100
(mixed MIG) machine: no unit is ever in two live allocations, no user or group ever holds more
than its caps, every request is answered, and the audit log agrees with what the clients saw.

The load is 32 processes × 200 allocate/release cycles (loadgen.PLAN: root and three real users,
two of them in a group with an aggregate cap). A checker thread reads the state database
read-only the whole time. Nothing here is timed: deadlines only turn a hang into a failure.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loadgen import (
    CONSTRAINT_SQL,
    CYCLES,
    DEADLINE_S,
    LOAD_REASONS,
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

from ds01.api.schemas import AllocateIn
from support import Daemon, Users, as_user, need

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture
def load_users(users: Users) -> Iterator[dict[str, str]]:
    """The real users of loadgen.PLAN, an admin group and the lab's Unix group."""
    suffix = uuid.uuid4().hex[:6]
    lab = users.group(f"ds01t-lab{suffix}")
    names = {
        "admins": users.group(f"ds01t-adm{suffix}"),
        "lab": lab,
        "ua": users.add(groups=(lab,)),
        "ub": users.add(groups=(lab,)),
        "uc": users.add(),
    }
    r = as_user(names["ua"], [sys.executable, "-c", "import ds01.client"])
    need(r.returncode == 0, f"test users cannot run {sys.executable}: {r.stderr[-300:]}")
    yield names


def assert_constraint_refuses_a_second_live_row(db: Path, tmp: Path) -> None:
    """On a copy of the final database: the real schema refuses a unit in two live allocations."""
    copy = tmp / "copy.db"
    src = connect_ro(db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    a, b = (r[0] for r in dst.execute("SELECT id FROM allocations ORDER BY id LIMIT 2"))
    unit = dst.execute("SELECT uuid FROM units ORDER BY uuid LIMIT 1").fetchone()[0]
    insert = "INSERT INTO allocation_units (allocation_id, unit_uuid, live) VALUES (?, ?, 1)"
    dst.execute("DELETE FROM allocation_units WHERE unit_uuid = ? AND live = 1", (unit,))
    dst.execute(insert, (a, unit))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed"):
        dst.execute(insert, (b, unit))
    dst.close()


def test_32_processes_never_double_allocate_or_exceed_a_quota(
    daemon_factory: Any, load_users: dict[str, str], tmp_path: Path
) -> None:
    names = load_users
    d: Daemon = daemon_factory(config=load_config(names["admins"], names["lab"]))
    db = d.state_dir / "ds01.db"
    caps = caps_for(names)

    with Checker(db, caps) as checker:
        procs = start_load(d.socket, names, retry=False, tag="c")
        wait_all(procs, timeout=DEADLINE_S + 60)
    print(summary(procs, checker.scans), f"unreadable: {checker.unreadable}")
    assert unfinished(procs) == []
    assert sum(p.stats["cycles"] for p in procs if p.stats) == PROCESSES * CYCLES == 6400
    assert checker.problems == []
    assert (checker.scans >= 3, checker.unreadable) == (True, 0)

    # The state at the end: consistent, constrained, and everything given back.
    assert scan(db, caps) == []
    assert integrity(db) == ["ok"]
    assert constraint_sql(db) == CONSTRAINT_SQL
    assert_constraint_refuses_a_second_live_row(db, tmp_path)
    assert story(db) == []

    # The table and the audit log agree with what every client was told.
    conn = connect_ro(db)
    rows = conn.execute("SELECT user, container, state, release_reason FROM allocations").fetchall()
    refused = Counter(
        conn.execute(
            "SELECT user, reason FROM events WHERE kind = 'alloc' AND action = 'refused'"
        ).fetchall()
    )
    conn.close()
    assert [r for r in rows if r[2] != "released"] == []
    assert {r[3] for r in rows} == {"loadgen"}
    made = Counter((user, container.rsplit("-", 1)[0]) for user, container, _, _ in rows)
    told = {(p.user, p.prefix): p.stats["allocated"] for p in procs if p.stats}
    assert made == Counter({k: n for k, n in told.items() if n})
    assert refused == refusals_seen(procs)
    assert {reason for _, reason in refused} == LOAD_REASONS


def test_the_scan_reports_a_double_allocation_written_behind_the_daemons_back(
    daemon_factory: Any, tmp_path: Path
) -> None:
    """The invariant scan is not vacuous: with the index dropped (as a broken schema would
    have it), a second live row for a unit is reported by both scans."""
    d: Daemon = daemon_factory(config=load_config("ds01t-admins", "ds01t-nolab"))
    with d.client() as c:
        first = c.allocate(AllocateIn(gpus=1, container="one"))
        second = c.allocate(AllocateIn(gpus=1, container="two"))
    d.stop()
    broken = tmp_path / "broken.db"
    shutil.copy(d.state_dir / "ds01.db", broken)
    conn = sqlite3.connect(broken)
    conn.execute("DROP INDEX one_live_allocation_per_unit")
    conn.execute(
        "INSERT INTO allocation_units (allocation_id, unit_uuid, live) VALUES (?, ?, 1)",
        (second.id, first.units[0].uuid),
    )
    conn.commit()
    conn.close()
    assert scan(broken, None) == [
        f"unit {first.units[0].uuid} is in live allocations {[first.id, second.id]}",
        f"double_allocations() reports {[first.units[0].uuid]}",
    ]
    assert constraint_sql(broken) is None
