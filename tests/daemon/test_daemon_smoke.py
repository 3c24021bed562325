"""ds01d as a real process: it starts, answers, refuses a second instance, stops cleanly."""

from __future__ import annotations

import subprocess
from typing import Any

from support import BIN, Daemon


def test_daemon_answers_health_and_whoami(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    with d.client() as c:
        h = c.health()
        me = c.whoami()
    assert (h.status, h.backend) == ("ok", "sim")
    assert (me.user, me.uid, me.admin) == ("root", 0, True)


def test_a_second_daemon_on_the_same_state_dir_is_refused(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    other = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30)
    assert other.returncode == 1
    assert "another ds01d is already running" in other.stderr
    assert "Stop the other one" in other.stderr
    with d.client() as c:
        assert c.health().status == "ok"


def test_a_second_daemon_on_the_same_run_dir_is_refused(daemon_factory: Any) -> None:
    """Another state directory but the same run directory: it would take over the sockets."""
    d: Daemon = daemon_factory()
    other = daemon_factory(start=False)
    argv = other.argv()
    argv[argv.index("--run-dir") + 1] = str(d.run_dir)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert f"another ds01d is already running on {d.run_dir}" in r.stderr
    assert "use another --run-dir" in r.stderr
    with d.client() as c:
        assert c.health().status == "ok"
    assert (d.run_dir / "api.sock").exists()


def test_sigterm_stops_the_daemon_cleanly_and_removes_its_socket(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    assert d.stop() == 0
    assert not d.socket.exists()


def test_check_validates_config_and_state(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    d.stop()
    r = subprocess.run(
        [
            str(BIN / "ds01d"),
            "--check",
            "--config",
            str(d.config_path),
            "--state-dir",
            str(d.state_dir),
            "--run-dir",
            str(d.run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert f"config ok: {d.config_path}" in r.stdout
    assert f"state ok: {d.state_dir / 'ds01.db'}" in r.stdout


def test_check_reports_a_broken_config_with_its_line(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    d.config_path.write_text("defaults:\n  max_gpus: 2\n")
    r = subprocess.run(
        [str(BIN / "ds01d"), "--check", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert f"{d.config_path}:2:3: defaults.max_gpus:" in r.stderr
