"""ds01d started by an ordinary user (issue 13 item 8): on directories it cannot write it says
so in one line — that it must run as root, and which directories — instead of a PermissionError
traceback. On directories of its own it still starts (tests and the demo run it that way)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import BIN, MACHINES, ROOT, Users, as_user, need, short_tmp, wait_for

MACHINE = str(MACHINES / "8xH100-mig-mixed.yaml")


def ds01d_command(user: str) -> tuple[list[str], dict[str, str]]:
    """How `user` runs this checkout's ds01d: the installed entry point when the user can run
    its interpreter (a .venv made by scripts/bootstrap.sh), else the distribution's python3
    (same version) on the .venv's packages — a development .venv built from an interpreter
    under /root cannot be run by anyone else, which is issue 13 item 1, not what this tests."""
    if as_user(user, [str(BIN / "ds01d"), "--version"]).returncode == 0:
        return [str(BIN / "ds01d")], {}
    system = Path("/usr/bin/python3")
    probe = as_user(user, [str(system), "-c", "import sys; print(sys.version_info[:2])"])
    need(
        probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])),
        f"user {user} can run neither {BIN / 'ds01d'} nor a {sys.version_info[:2]} python3",
    )
    site = next((BIN.parent / "lib").glob("python3*/site-packages"))
    code = "import sys; from ds01.daemon.main import run; sys.argv[0] = 'ds01d'; run()"
    return [str(system), "-c", code], {"PYTHONPATH": f"{ROOT / 'src'}:{site}"}


@pytest.fixture
def base() -> Iterator[Path]:
    d = short_tmp("ds01-nonroot-")  # root's, mode 0755: others may enter, not write
    (d / "ds01.yaml").write_text("defaults:\n  max_gpueq: 1\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_ds01d(user: str, base: Path, state: Path, run: Path) -> subprocess.CompletedProcess[str]:
    cmd, env = ds01d_command(user)
    argv = [*cmd, "--config", str(base / "ds01.yaml"), "--sim", MACHINE]
    argv += ["--state-dir", str(state), "--run-dir", str(run)]
    return as_user(user, argv, env=env)


def test_a_user_on_roots_directories_is_told_in_one_line(users: Users, base: Path) -> None:
    user = users.add()
    uid = pwd.getpwnam(user).pw_uid
    result = run_ds01d(user, base, base / "state", base / "run")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"ds01d: error: must run as root (systemctl start ds01d): as user {user}, uid {uid} it "
        f"cannot write {base / 'state'} (state, --state-dir) or {base / 'run'} "
        "(sockets, --run-dir)"
    ]
    assert sorted(p.name for p in base.iterdir()) == ["ds01.yaml"]  # nothing was created


def test_only_the_directory_it_cannot_write_is_named(users: Users, base: Path) -> None:
    user = users.add()
    pw = pwd.getpwnam(user)
    state = base / "mine"
    state.mkdir()
    os.chown(state, pw.pw_uid, pw.pw_gid)
    result = run_ds01d(user, base, state, base / "run")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].endswith(f"cannot write {base / 'run'} (sockets, --run-dir)")
    assert str(state) not in lines[0]


def test_a_user_on_directories_of_its_own_starts(users: Users, base: Path) -> None:
    user = users.add()
    pw = pwd.getpwnam(user)
    own = base / "own"
    own.mkdir()
    os.chown(own, pw.pw_uid, pw.pw_gid)
    cmd, env = ds01d_command(user)
    argv = [*cmd, "--config", str(base / "ds01.yaml"), "--sim", MACHINE]
    argv += ["--state-dir", str(own / "state"), "--run-dir", str(own / "run")]
    full_env = {"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir, "LANG": "C.UTF-8", **env}
    log = base / "ds01d.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *argv],
            stdout=out,
            stderr=out,
            env=full_env,
        )
    try:

        def answering() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"ds01d exited {proc.returncode}: {log.read_text()}")
            return (own / "run" / "api.sock").exists()

        wait_for(answering, "an unprivileged ds01d's socket", detail=log.read_text)
        assert (own / "state" / "ds01.db").stat().st_uid == pw.pw_uid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()
