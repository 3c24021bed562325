"""`ds01 doctor --root DIR` on a machine state that reproduces the DS01 incident (BRIEF §2), run
as the real `ds01` command.

This machine has no GPU, so the host is a directory: `ds01 host apply --root DIR` writes the
files; /dev/nvidiactl, /dev/nvidia0, /dev/nvidia1 and /dev/nvidia-uvm are *plain files* under
DIR/dev with the owner and mode real nodes would have; DIR/usr/bin/nvidia-smi is a stand-in
ELF (a copy of /bin/true). Users and groups are real (NSS), as --root does not relocate
accounts. The incident: a script installed as /usr/local/bin/nvidia-smi that refuses anyone
outside `video`, and the ds01 users taken out of the device group.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from host_support import ds01

from ds01.config import load_config
from ds01.host.apply import apply, settings_for
from ds01.host.doctor import Context, Status, run_doctor
from ds01.paths import Paths
from ds01.store.db import Database
from support import Users

WRAPPER = """#!/bin/bash
# DS01's wrapper: only members of 'video' may see the GPUs.
if ! id -nG | grep -qw video; then
    echo "nvidia-smi: access denied (ask an admin)" >&2
    exit 1
fi
exec /usr/bin/nvidia-smi "$@"
"""
NODES = ("nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm")
CHECK_IDS = [
    "config.valid",
    "nvidia-smi.not-shadowed",
    "nvidia-smi.runs-for-user",
    "devices.present",
    "devices.mode",
    "devices.driver-params",
    "devices.driver-rewrites",
    "devices.group-members",
    "devices.uvm-gate",
    "devices.rules-current",
    "compute.cuda-refused",
    "compute.cuda-exempt",
    "compute.cuda-granted",
    "profile.current",
    "profile.pam-env",
    "profile.cuda-hidden",
    "profile.cuda-exempt",
    "profile.cuda-granted",
    "profile.docker-host",
    "docker.users-not-in-docker-group",
    "docker.gate-group",
    "docker.no-nvidia-default",
    "docker.nvidia-envvar-refused",
    "docker.files-current",
    "daemon.running",
    "daemon.loops",
    "daemon.invariants",
    "daemon.config-current",
    "daemon.sockets",
    "daemon.host-access",
    "systemd.current",
    "state.integrity",
    # A SLURM node's checks (docs/slurm.md): skipped here, where cluster.backend is local.
    "slurm.constrain-devices",
    "slurm.gres-files",
    "slurm.munge-key",
    "slurm.node-gres",
    "slurm.job-one-gpu",
]


@dataclass
class Lab:
    root: Path
    config: Path
    state_dir: Path
    device_group: str
    people: tuple[str, str]

    def doctor(self, *args: str) -> subprocess.CompletedProcess[str]:
        return ds01(
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state_dir),
            "doctor",
            "--root",
            str(self.root),
            *args,
        )


@pytest.fixture
def lab(users: Users, tmp_path: Path) -> Lab:
    tag = uuid.uuid4().hex[:6]
    device_group = users.group(f"ds01tv{tag}")
    gate = users.group(f"ds01tg{tag}")
    alice = users.add(groups=(device_group, gate))
    bob = users.add(groups=(device_group, gate))
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    config = tmp_path / "ds01.yaml"
    config.write_text(
        f"groups:\n  lab:\n    members: [{alice}, {bob}]\n"
        f"host:\n  device_access: group\n  device_group: {device_group}\n  gate_group: {gate}\n"
    )
    state_dir = Path("/var/lib/ds01-test") / tag  # as seen on the host; lives under root
    settings = settings_for(load_config(config), config, state_dir, Path("/run/ds01"))
    applied = apply(load_config(config), settings, root)  # as `ds01 host apply --root` does
    assert not applied.failed, applied.lines
    gid = int(
        subprocess.run(
            ["getent", "group", device_group], capture_output=True, text=True, check=True
        ).stdout.split(":")[2]
    )
    for name in NODES:
        node = root / "dev" / name
        node.write_bytes(b"")
        os.chown(node, 0, gid)
        node.chmod(0o660)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy("/bin/true", root / "usr/bin/nvidia-smi")
    Database(root / str(state_dir).lstrip("/") / "ds01.db").close()
    return Lab(root, config, state_dir, device_group, (alice, bob))


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in json.loads(result.stdout)["checks"]}


def test_a_clean_host_passes(lab: Lab) -> None:
    result = lab.doctor("--json")
    report = json.loads(result.stdout)
    assert [c["id"] for c in report["checks"]] == CHECK_IDS
    assert all(set(c) == {"id", "status", "summary", "evidence", "fix"} for c in report["checks"])
    assert {k: v for k, v in statuses(result).items() if v != "skip"} == {
        "config.valid": "pass",
        "nvidia-smi.not-shadowed": "pass",
        "devices.present": "pass",
        "devices.mode": "pass",
        "devices.group-members": "pass",
        "devices.rules-current": "pass",
        "profile.current": "pass",
        "docker.users-not-in-docker-group": "pass",
        "docker.gate-group": "pass",
        "docker.no-nvidia-default": "pass",
        "docker.nvidia-envvar-refused": "pass",
        "docker.files-current": "pass",
        "daemon.host-access": "pass",
        "systemd.current": "pass",
        "state.integrity": "pass",
    }
    assert result.returncode == 0, result.stdout


def _break_like_ds01(lab: Lab) -> None:
    wrapper = lab.root / "usr/local/bin/nvidia-smi"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    for user in lab.people:
        subprocess.run(
            ["gpasswd", "--delete", user, lab.device_group], check=True, capture_output=True
        )
    (lab.root / "dev/nvidia1").chmod(0o600)


def test_the_incident_fails_naming_both_problems(lab: Lab) -> None:
    _break_like_ds01(lab)
    result = lab.doctor()
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    alice, bob = lab.people
    assert (
        "FAIL  nvidia-smi.not-shadowed: nvidia-smi is shadowed by a wrapper: "
        "/usr/local/bin/nvidia-smi" in lines
    )
    assert "      /usr/local/bin/nvidia-smi: script (#!/bin/bash)" in lines
    assert (
        f"FAIL  devices.group-members: 2 ds01 users are not in the device group "
        f"'{lab.device_group}' and cannot query the GPUs: {alice}, {bob}" in lines
    )
    assert any(line.startswith("FAIL  devices.mode: 1 NVIDIA device nodes") for line in lines)
    assert lines[-1].startswith("doctor: ") and "3 fail" in lines[-1]


def test_fix_repairs_what_it_may_and_names_what_it_leaves(lab: Lab) -> None:
    _break_like_ds01(lab)
    result = lab.doctor("--fix")
    lines = result.stdout.splitlines()
    wrapper = lab.root / "usr/local/bin/nvidia-smi"
    moved = list(wrapper.parent.glob("nvidia-smi.ds01-bak.*"))
    assert not wrapper.exists() and len(moved) == 1
    assert moved[0].read_text() == WRAPPER  # moved aside, never deleted
    assert (lab.root / "usr/bin/nvidia-smi").read_bytes() == Path("/bin/true").read_bytes()
    assert (lab.root / "dev/nvidia1").stat().st_mode & 0o777 == 0o660
    assert (
        f"fixed: nvidia-smi.not-shadowed: moved /usr/local/bin/nvidia-smi aside to "
        f"{moved[0].name} (it was a script shadowing nvidia-smi)" in lines
    )
    assert "PASS  nvidia-smi.not-shadowed: nvidia-smi is NVIDIA's binary, not shadowed" in lines
    assert any(line.startswith("PASS  devices.mode:") for line in lines)
    # Accounts are the live system's: with --root they are left to the admin.
    assert any(
        line.startswith(
            f"left to the admin: devices.group-members: gpasswd --add USER {lab.device_group}"
        )
        for line in lines
    )
    assert result.returncode == 2


def test_fix_on_the_live_host_adds_the_users_back(lab: Lab) -> None:
    """The group repair runs only against the live root: here the doctor runs just that check
    with root /, as `ds01 doctor --fix --only devices.group-members` would."""
    _break_like_ds01(lab)
    ctx = Context(Path("/"), Paths.resolve(lab.config), load_config(lab.config))
    report = run_doctor(ctx, fix=True, only=("devices.group-members",))
    alice, bob = lab.people
    assert report.fixed == [
        f"devices.group-members: gpasswd --add {alice} {lab.device_group}",
        f"devices.group-members: gpasswd --add {bob} {lab.device_group}",
    ]
    assert report.results[0].status is Status.PASS
    assert report.exit_code == 0
