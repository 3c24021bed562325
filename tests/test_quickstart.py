"""The README's Quick start on a fresh machine (issue 13 item 1): its two commands carry no
`sudo` (a fresh Debian has none), and their first step, scripts/bootstrap.sh, builds the venv on
an interpreter every user can run — the distribution's /usr/bin/python3 even when root's PATH
starts with a python3 in a private (0700) directory, refusing such a one when asked for it
explicitly — and rebuilds a venv that cannot run. Works on a venv in a temp dir (--venv,
--no-install): the checkout's own .venv is never touched."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support import ROOT

BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]


def test_the_quickstart_commands_need_no_sudo() -> None:
    assert quickstart_commands() == ["./scripts/demo.sh", ".ci/run"]
    for script in ("scripts/demo.sh", ".ci/run", "scripts/bootstrap.sh", ".ci/setup-system.sh"):
        for line in (ROOT / script).read_text().splitlines():
            code = line.split("#", 1)[0].strip()
            assert not re.match(r"(.*[;&|(]\s*)?sudo\s", code), f"{script}: {line}"


@pytest.fixture
def private_python(tmp_path: Path) -> Path:
    """A python3 in a directory only root can enter (like pyenv under /root): it runs for root,
    but no other user could run anything built on it."""
    private = tmp_path / "private" / "bin"
    private.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    py = private / "python3"
    py.write_text('#!/bin/sh\nexec /usr/bin/python3 "$@"\n')
    py.chmod(0o755)
    return py


def bootstrap(venv: Path, private: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": f"{private.parent}:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", **env}
    return subprocess.run(
        ["bash", str(BOOTSTRAP), "--venv", str(venv), "--no-install"],
        capture_output=True,
        text=True,
        env=clean,
        timeout=120,
        check=False,
    )


def venv_home(venv: Path) -> str:
    cfg = (venv / "pyvenv.cfg").read_text()
    return next(
        line.split("=", 1)[1].strip() for line in cfg.splitlines() if line.startswith("home")
    )


def test_a_private_python3_first_on_path_is_passed_over(
    tmp_path: Path, private_python: Path
) -> None:
    assert os.path.exists("/usr/bin/python3")
    venv = tmp_path / "venv"
    result = bootstrap(venv, private_python)
    assert result.returncode == 0, result.stdout + result.stderr
    assert venv_home(venv) == "/usr/bin"
    assert os.path.realpath(venv / "bin" / "python").startswith("/usr/bin/python3")


def test_a_private_python_asked_for_is_refused_saying_why(
    tmp_path: Path, private_python: Path
) -> None:
    venv = tmp_path / "venv"
    result = bootstrap(venv, private_python, PYTHON=str(private_python))
    assert result.returncode == 1
    assert f"refusing {private_python}: other users cannot enter {tmp_path / 'private'}" in (
        result.stderr
    )
    assert "mode 700" in result.stderr
    assert not venv.exists()


def test_a_venv_that_cannot_run_is_rebuilt(tmp_path: Path, private_python: Path) -> None:
    venv = tmp_path / "venv"
    assert bootstrap(venv, private_python).returncode == 0
    (venv / "bin" / "python3").unlink()
    (venv / "bin" / "python3").symlink_to(tmp_path / "gone" / "python3")
    result = bootstrap(venv, private_python)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"rebuilding {venv}: {venv}/bin/python is missing or points nowhere" in result.stdout
    ran = subprocess.run([venv / "bin" / "python", "-c", "print(1)"], capture_output=True)
    assert ran.stdout == b"1\n"


def test_a_venv_on_a_private_interpreter_is_rebuilt(tmp_path: Path, private_python: Path) -> None:
    venv = tmp_path / "venv"
    assert bootstrap(venv, private_python).returncode == 0
    (venv / "bin" / "python3").unlink()
    (venv / "bin" / "python3").symlink_to(private_python)  # runs for root, for nobody else
    result = bootstrap(venv, private_python)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"rebuilding {venv}: other users cannot enter {tmp_path / 'private'}" in result.stdout
    assert os.path.realpath(venv / "bin" / "python").startswith("/usr/bin/python3")


def test_a_healthy_venv_is_kept(tmp_path: Path, private_python: Path) -> None:
    venv = tmp_path / "venv"
    assert bootstrap(venv, private_python).returncode == 0
    marker = venv / "kept"
    marker.touch()
    result = bootstrap(venv, private_python)
    assert result.returncode == 0
    assert result.stdout == "" and marker.exists()


def test_the_demos_package_step_takes_only_the_demos_packages() -> None:
    """scripts/demo.sh calls `.ci/setup-system.sh --demo …`: the flag must select the demo's
    short list (no SSH server, compose or sudo), not reach apt-get as an option. Everything is
    installed where the suite runs, so this asks apt nothing."""
    r = subprocess.run(
        ["bash", str(ROOT / ".ci/setup-system.sh"), "--demo", "python3-venv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("setup-system: all present: docker.io busybox-static")
    assert "openssh-server" not in r.stdout and "sudo" not in r.stdout
    assert "--demo" not in r.stdout + r.stderr
