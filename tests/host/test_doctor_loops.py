"""`ds01 doctor` shows ds01d's background loops (issue 10, item 3): daemon.loops reads
/v1/health `loops` and FAILs while one is failing, WARNs when one has not passed for much longer
than its interval (stale), and passes otherwise.

Failing is shown on a real ds01d whose expiry loop is made to fail the way test_loops.py does it
(an SQLite write lock held past the busy timeout); staleness, which needs a loop stuck for
minutes, through the check's health probe with the times such a loop would report.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from host_support import ds01

from ds01.api.schemas import AllocateIn
from ds01.config import parse_config_text
from ds01.host.doctor import Status, run_doctor
from ds01.host.doctor.base import Context, DaemonHealth, LoopState
from ds01.host.doctor.daemon import stale_after
from ds01.paths import Paths
from support import Daemon, wait_for

NOWHERE = "unix:///nonexistent/ds01-test-docker.sock"  # never the host's engine
CONFIG = f"""\
admin_group: ds01t-admins
docker:
  host: {NOWHERE}
"""


def doctor_loops(d: Daemon) -> tuple[int, dict[str, Any]]:
    r = ds01(
        "--run-dir",
        str(d.run_dir),
        "--config",
        str(d.config_path),
        "doctor",
        "--json",
        "--only",
        "daemon.loops",
    )
    checks = json.loads(r.stdout)["checks"]
    assert [c["id"] for c in checks] == ["daemon.loops"]
    return r.returncode, checks[0]


def test_doctor_shows_a_failing_loop_of_a_real_ds01d(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    with d.client() as c:
        wait_for(lambda: c.health().loops.get("expiry", None), "the expiry loop's first pass", 60)
        wait_for(lambda: c.health().loops["expiry"].last_ok, "the expiry loop's first success", 60)
        rc, check = doctor_loops(d)
        assert (rc, check["status"]) == (0, "pass"), check
        names = {line.split(":")[0] for line in check["evidence"]}
        assert {"expiry", "sampler", "reconcile", "host-access"} <= names
        expiry = next(e for e in check["evidence"] if e.startswith("expiry:"))
        assert expiry.startswith("expiry: last success ") and expiry.endswith("(every 1 s)")

        lock = sqlite3.connect(d.state_dir / "ds01.db", timeout=1, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")  # past the daemon's busy timeout: expiry fails
            wait_for(lambda: c.health().loops["expiry"].failing, "the expiry loop to fail", 40)
            rc, check = doctor_loops(d)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert (rc, check["status"]) == (2, "fail"), check
        assert check["summary"].startswith("failing: expiry")
        assert any(
            e.startswith("expiry: FAILING: OperationalError: database is locked")
            for e in check["evidence"]
        ), check["evidence"]
        assert "journalctl -u ds01d" in check["fix"]

        wait_for(
            lambda: c.health().loops["expiry"].failing is None, "the expiry loop to recover", 60
        )
    rc, check = doctor_loops(d)
    assert (rc, check["status"]) == (0, "pass"), check


def test_doctor_fails_on_a_state_invariant_ds01d_found_broken(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    with d.client() as c:
        alloc = c.allocate(AllocateIn(gpueq="1/7", container="c0"))
    assert d.stop() == 0

    def doctor_invariants() -> tuple[int, dict[str, Any]]:
        r = ds01(
            "--run-dir", str(d.run_dir), "--config", str(d.config_path),
            "doctor", "--json", "--only", "daemon.invariants",
        )  # fmt: skip
        (check,) = json.loads(r.stdout)["checks"]
        return r.returncode, check

    d.start()
    rc, check = doctor_invariants()
    assert (rc, check["status"]) == (0, "pass"), check
    assert d.stop() == 0
    conn = sqlite3.connect(d.state_dir / "ds01.db", isolation_level=None)
    conn.execute("DELETE FROM events WHERE allocation_id = ?", (alloc.id,))  # history lost
    conn.close()
    d.start()
    rc, check = doctor_invariants()
    assert (rc, check["status"]) == (2, "fail"), check
    assert check["evidence"] == [
        f"I5: allocation {alloc.id} is reserved but its audit log ends with no event"
    ]
    assert "ds01d --check" in check["fix"]


def test_a_stale_loop_warns_and_an_event_driven_one_never_does(tmp_path: Path) -> None:
    now = time.time()
    every = 30.0

    def probe(loops: dict[str, LoopState]) -> Context:
        health = DaemonHealth("status ok", loops)
        paths = Paths(tmp_path / "ds01.yaml", tmp_path / "state", tmp_path / "run")
        return Context(
            Path("/"), paths, parse_config_text("", "t.yaml"), health=lambda _: health, now=now
        )

    def result(loops: dict[str, LoopState]) -> Any:
        (r,) = run_doctor(probe(loops), only=("daemon.loops",)).results
        return r

    recent = LoopState(now - every, None, every, now - 3600)
    stuck = LoopState(now - stale_after(every) - 1, None, every, now - 3600)
    never = LoopState(None, None, every, now - stale_after(every) - 1)
    events = LoopState(now - 86400, None, None, now - 86400)  # docker-events: quiet for a day

    assert result({"reconcile": recent, "docker-events": events}).status is Status.PASS
    r = result({"reconcile": stuck, "docker-events": events})
    assert (r.status, r.summary) == (Status.WARN, "no recent success: reconcile")
    r = result({"reconcile": never})
    assert (r.status, r.summary) == (Status.WARN, "no recent success: reconcile")
    assert "reconcile: last success never (every 30 s)" in r.evidence
    failing = LoopState(now - 5, "OperationalError: disk I/O error", every, now - 3600)
    r = result({"reconcile": stuck, "expiry": failing})
    assert (r.status, r.summary) == (Status.FAIL, "failing: expiry; stale: reconcile")
