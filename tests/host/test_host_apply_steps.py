"""`ds01 host apply` through the real `ds01` command (issue 13 item 8): the unit it writes runs
the ds01d of this install, not a fixed /opt/ds01 path, and it prints only the next steps that
the files it changed call for (no `systemctl restart docker` unless daemon.json changed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from host_support import DS01, ds01

INSTALLED_DS01D = Path(DS01).parent / "ds01d"
UNIT = "etc/systemd/system/ds01d.service"


def apply(cfg: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = ds01("--config", str(cfg), "host", "apply", "--root", str(root), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def next_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("next ")]


def config(tmp_path: Path) -> Path:
    path = tmp_path / "ds01.yaml"
    path.write_text("defaults:\n  max_gpueq: 1\n")
    return path


def test_the_unit_runs_the_ds01d_of_this_install(tmp_path: Path) -> None:
    cfg, root = config(tmp_path), tmp_path / "root"
    root.mkdir()
    dry = apply(cfg, root, "--only", "systemd", "--dry-run")
    execs = [line for line in dry.stdout.splitlines() if line.startswith("+ExecStart=")]
    assert execs == [
        f"+ExecStart={INSTALLED_DS01D} --config {cfg} --state-dir /var/lib/ds01 --run-dir /run/ds01"
    ]
    assert "/opt/ds01" not in dry.stdout
    assert not (root / UNIT).exists()
    apply(cfg, root, "--only", "systemd")
    assert f"ExecStart={INSTALLED_DS01D} --config" in (root / UNIT).read_text()
    assert INSTALLED_DS01D.is_file()


def test_only_the_steps_for_what_changed_are_printed(tmp_path: Path) -> None:
    cfg, root = config(tmp_path), tmp_path / "root"
    root.mkdir()
    # No daemon.json: apply leaves Docker's config alone, so nothing asks for a docker restart;
    # the NVIDIA runtime's config.toml is read at each container start.
    first = apply(cfg, root, "--only", "docker", "--only", "systemd")
    assert "created  /etc/nvidia-container-runtime/config.toml" in first.stdout
    assert not (root / "etc/docker/daemon.json").exists()
    assert next_lines(first) == [
        "next     systemd: systemctl daemon-reload && systemctl enable --now ds01d",
        "next     systemd: systemd-tmpfiles --create /etc/tmpfiles.d/ds01.conf",
    ]
    assert "docker" not in "".join(next_lines(first))

    # A second run changes nothing and asks for nothing.
    again = apply(cfg, root, "--only", "docker", "--only", "systemd")
    assert "nothing to change" in again.stdout
    assert next_lines(again) == []

    # daemon.json with nvidia as the default runtime is edited: now Docker must restart. The
    # unit, changed by hand, is put back: the running ds01d must restart (not enable --now).
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text(json.dumps({"default-runtime": "nvidia"}))
    unit = root / UNIT
    unit.write_text(unit.read_text().replace("RestartSec=2", "RestartSec=9"))
    third = apply(cfg, root, "--only", "docker", "--only", "systemd")
    assert next_lines(third) == [
        "next     docker: systemctl restart docker (it reads daemon.json only when it starts)",
        "next     systemd: systemctl daemon-reload && systemctl restart ds01d",
    ]


def test_a_mode_change_alone_asks_for_no_step(tmp_path: Path) -> None:
    cfg, root = config(tmp_path), tmp_path / "root"
    root.mkdir()
    apply(cfg, root, "--only", "systemd")
    (root / UNIT).chmod(0o600)
    result = apply(cfg, root, "--only", "systemd")
    assert f"chmod    /{UNIT} 0600 -> 0644" in result.stdout
    assert next_lines(result) == []
