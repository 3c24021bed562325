"""Background loops survive what they cannot help (issue 10, D1): an admin's `sqlite3` holding
the state database's write lock longer than the busy timeout makes the expiry pass fail; the
loop says so in /v1/health, and releases the expired reservation by itself once the lock goes."""

from __future__ import annotations

import sqlite3
from typing import Any

from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn
from support import Daemon, wait_for

CONFIG = f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 8
  max_units_per_container: 7
  max_containers: 10
  allow_full_gpu: true
docker:
  host: {NOWHERE}
allocation:
  reservation_timeout: 1s
"""


def test_expiry_resumes_after_the_database_was_locked_past_the_busy_timeout(
    daemon_factory: Any,
) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    with d.client() as c:
        wait_for(lambda: "expiry" in c.health().loops, "the expiry loop's first pass", 60)
        a = c.allocate(AllocateIn(gpus=1, container="never-bound"))
        lock = sqlite3.connect(d.state_dir / "ds01.db", timeout=1, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")  # held past the daemon's 10 s busy timeout
            failing = wait_for(
                lambda: c.health().loops["expiry"].failing, "the expiry loop to report", 40
            )
            assert failing == "OperationalError: database is locked"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        done = wait_for(
            lambda: c.allocation(a.id).state == "released" and c.allocation(a.id),
            "the reservation to expire once the lock is gone",
            60,
        )
        assert done.release_reason == "reservation_expired"
        wait_for(
            lambda: c.health().loops["expiry"].failing is None, "the expiry loop to recover", 60
        )
    assert "expiry failed, retrying: OperationalError: database is locked" in d.log()
    assert "expiry works again after" in d.log()
