"""A full state disk (issue 10, items 3 and 4): the state directory is a small tmpfs that the
test fills to the last byte. A request that must write gets "state disk full" (HTTP 507, what,
why, what to do; no 500, no traceback) and leaves nothing half-written; the expiry loop and the
backup loop report it in /v1/health and carry on by themselves once space is freed, without a
restart. Needs root (mount); CI runs as root."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn
from support import Daemon, need, wait_for


def config(state: str, timeout: str = "5s") -> str:
    return f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 8
  max_units_per_container: 7
  max_containers: 10
  allow_full_gpu: true
docker:
  host: {NOWHERE}
allocation:
  reservation_timeout: {timeout}
state:
{state}"""


def fill(path: Path) -> None:
    """Write `path` until the file system has no byte left."""
    with open(path, "ab", buffering=0) as fh:
        for chunk in (1024 * 1024, 4096, 1):
            block = b"\0" * chunk
            try:
                while True:
                    fh.write(block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


@pytest.fixture
def small_state_disk(daemon_factory: Any) -> Iterator[Any]:
    """A ds01d whose state directory is a 16 MiB tmpfs of its own."""
    need(os.geteuid() == 0, "mounting a tmpfs state directory needs root")
    mounted: list[Daemon] = []

    def make(cfg: str) -> Daemon:
        d: Daemon = daemon_factory(config=cfg, start=False)
        d.state_dir.mkdir(parents=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "ds01-test", str(d.state_dir)],
            check=True,
        )
        mounted.append(d)
        d.start()
        return d

    yield make
    for d in mounted:
        d.stop()
        if subprocess.run(["umount", str(d.state_dir)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(d.state_dir)], check=False)


def raw_allocate(d: Daemon, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)), timeout=60) as h:
        return h.post("http://ds01d/v1/allocations", json=body)


def test_a_full_state_disk_is_a_clear_error_and_expiry_resumes_when_space_returns(
    small_state_disk: Any,
) -> None:
    d: Daemon = small_state_disk(config("  backup_interval: null\n"))
    disk = d.state_dir
    request = {"gpus": 1, "container": "while-full"}
    with d.client() as c:
        wait_for(lambda: "expiry" in c.health().loops, "the expiry loop's first pass", 60)
        # Fill the disk but for a margin, take a reservation in that margin, then fill it too:
        # the reservation falls due (5 s) while nothing can be written.
        (disk / "margin").write_bytes(b"\0" * 2 * 1024 * 1024)
        fill(disk / "filler")
        (disk / "margin").unlink()
        a = c.allocate(AllocateIn(gpus=1, container="never-bound"))
        fill(disk / "filler-2")

        failing = wait_for(
            lambda: c.health().loops["expiry"].failing, "the expiry loop to fail", 60
        )
        assert failing.startswith(f"state disk full: ds01d could not save a change to {disk}")
        assert c.allocation(a.id).state == "reserved"  # reads still work

        r = raw_allocate(d, request)
        assert r.status_code == 507, r.text
        error = r.json()["error"]
        assert error["kind"] == "state_disk_full"
        assert error["what"] == f"state disk full: ds01d could not save a change to {disk}/ds01.db"
        assert error["why"].startswith(f"The file system holding {disk} has no space left (")
        assert error["why"].endswith("nothing was changed.")
        assert error["fix"].startswith(f"Free space on the state disk (df -h {disk})")

        # The CLI says the same in three lines, exit 1, no traceback.
        cli = d.cli("admin", "alloc", "release", str(a.id), "--reason", "test")
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert "state disk full: ds01d could not save a change to" in cli.stderr
        assert "Free space on the state disk" in cli.stderr
        assert "Traceback" not in cli.stderr
        assert c.allocation(a.id).state == "reserved"
        assert c.gpu_status().units  # the daemon keeps answering

        (disk / "filler").unlink()
        (disk / "filler-2").unlink()
        r = raw_allocate(d, request)
        assert r.status_code == 201, r.text
        b = r.json()
        done = wait_for(
            lambda: c.allocation(a.id).state == "released" and c.allocation(a.id),
            "the reservation to expire once there is space",
            60,
        )
        assert done.release_reason == "reservation_expired"
        wait_for(
            lambda: c.health().loops["expiry"].failing is None, "the expiry loop to recover", 60
        )
    # Nothing of the refused writes was kept: the request that succeeded got the next id.
    assert b["id"] == a.id + 1
    conn = sqlite3.connect(f"file:{disk}/ds01.db?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT MAX(id) FROM allocations").fetchone() == (b["id"],)
        assert conn.execute(
            "SELECT COUNT(*) FROM events WHERE allocation_id = ? AND action = 'released'", (a.id,)
        ).fetchone() == (1,)
    finally:
        conn.close()
    log = d.log()
    assert log.count("expiry failed, retrying: state disk full") == 1
    assert "expiry works again after" in log
    assert "Traceback" not in log


def test_a_backup_on_a_full_disk_fails_harmlessly_and_is_taken_once_there_is_space(
    small_state_disk: Any,
) -> None:
    d: Daemon = small_state_disk(config("  backup_interval: 1s\n  backup_keep: 2\n", "1h"))
    backup_dir = d.state_dir / "backups"
    with d.client() as c:
        wait_for(lambda: list(backup_dir.glob("ds01-*.db")), "a first backup", 60)
        a = c.allocate(AllocateIn(gpus=1, container="kept"))
        fill(d.state_dir / "filler")
        failing = wait_for(
            lambda: (c.health().loops["backup"].failing or "").startswith(
                f"state disk full: no backup of {d.state_dir}/ds01.db written"
            ),
            "the backup loop to refuse for want of space",
            60,
        )
        assert failing
        before = sorted(backup_dir.iterdir())
        assert all(p.name.startswith("ds01-") for p in before)  # no partial file left behind
        assert c.allocation(a.id).state == "reserved"  # the daemon is unhurt
        assert c.gpu_status().units
        (d.state_dir / "filler").unlink()
        wait_for(lambda: sorted(backup_dir.iterdir()) != before, "a backup once there is space", 60)
        wait_for(
            lambda: c.health().loops["backup"].failing is None, "the backup loop to recover", 60
        )
    # Logged once per cause (a backup caught by the filling may fail writing, the rest are
    # refused before they start), not once per retry.
    failures = [line for line in d.log().splitlines() if "backup failed, retrying:" in line]
    assert 1 <= len(failures) <= 2
    assert all("backup failed, retrying: state disk full" in line for line in failures)
    assert "backup works again after" in d.log()
