"""`ds01 host apply` into a temporary --root, run as the real `ds01` command: the files and modes
it installs, idempotence, the exact dry-run diff, backups, shared files edited only in ds01's
part, and accounts left alone unless the root is /. One test applies to the real / (devices
area only) to prove group creation and membership, and restores everything it touched."""

from __future__ import annotations

import grp
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from host_support import HostFiles, ds01, snapshot

from support import Users, need

FIXTURES = Path(__file__).parent / "fixtures"
BASHRC = '# System-wide .bashrc file for interactive bash(1) shells.\n[ -z "$PS1" ] && return\n'
PAM_ENV = "# pam_env.conf (site)\nEDITOR DEFAULT=vi\n"
DAEMON_JSON = {
    "log-driver": "journald",
    "default-runtime": "nvidia",
    "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
    "data-root": "/srv/docker",
}
UNRELATED = {
    "etc/hosts": b"127.0.0.1 localhost\n",
    "etc/profile.d/site.sh": b"export SITE=1\n",
    "etc/docker/certs.d/readme": b"keep me\n",
    "usr/local/bin/tool": b"#!/bin/sh\necho tool\n",
}
MANAGED_MODES = {
    "etc/profile.d/ds01-host.sh": 0o644,
    "etc/bash.bashrc": 0o644,
    "etc/security/pam_env.conf": 0o640,
    "etc/udev/rules.d/70-ds01-nvidia.rules": 0o644,
    "etc/modprobe.d/ds01-nvidia.conf": 0o644,
    "etc/nvidia-container-runtime/config.toml": 0o644,
    "etc/docker/daemon.json": 0o600,
    "etc/systemd/system/ds01d.service": 0o644,
    "etc/tmpfiles.d/ds01.conf": 0o644,
    "run/ds01/host-access": 0o644,
}
BACKUP = re.compile(r"\.ds01-bak\.\d{8}T\d{6}(-\d+)?$")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    for rel, content in UNRELATED.items():
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_bytes(content)
    (r / "etc/bash.bashrc").write_text(BASHRC)
    (r / "etc/security").mkdir(parents=True)
    (r / "etc/security/pam_env.conf").write_text(PAM_ENV)
    (r / "etc/security/pam_env.conf").chmod(0o640)
    (r / "etc/docker/daemon.json").write_text(json.dumps(DAEMON_JSON))
    (r / "etc/docker/daemon.json").chmod(0o600)
    return r


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "ds01.yaml"
    path.write_text("exempt_users: [prof]\ngroups:\n  lab:\n    members: [nobody]\n")
    return path


def apply(cfg: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ds01("--config", str(cfg), "host", "apply", "--root", str(root), *extra)


def test_apply_installs_every_file_with_its_mode(cfg: Path, root: Path) -> None:
    result = apply(cfg, root)
    assert result.returncode == 0, result.stderr + result.stdout
    files = snapshot(root)
    for rel, mode in MANAGED_MODES.items():
        assert files[rel][1] == mode, rel
    assert files["run/ds01/host-access"][0].decode().splitlines()[-1] == "prof exempt 0"
    assert (root / "run/ds01").stat().st_mode & 0o777 == 0o755
    assert "created  /etc/profile.d/ds01-host.sh" in result.stdout.splitlines()


def test_a_second_run_changes_nothing_and_says_so(cfg: Path, root: Path) -> None:
    assert apply(cfg, root).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    again = apply(cfg, root)
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1] == "nothing to change: 9 files already current"
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_dry_run_prints_the_exact_diff_and_changes_nothing(cfg: Path, root: Path) -> None:
    assert apply(cfg, root, "--only", "systemd").returncode == 0
    conf = root / "etc/tmpfiles.d/ds01.conf"
    conf.write_text(conf.read_text().replace("0755", "0700"))
    before = snapshot(root)
    result = apply(cfg, root, "--only", "systemd", "--dry-run")
    assert result.returncode == 0
    assert result.stdout.splitlines()[1:] == [
        "--- /etc/tmpfiles.d/ds01.conf",
        "+++ /etc/tmpfiles.d/ds01.conf",
        "@@ -1,3 +1,3 @@",
        " # ds01: the socket directory (api.sock, docker.sock, host-access), created at boot.",
        " # Managed by `ds01 host apply` from the ds01 config; local edits are overwritten.",
        "-d /run/ds01 0700 root root -",
        "+d /run/ds01 0755 root root -",
        "would update /etc/tmpfiles.d/ds01.conf",
        "dry run: nothing was changed",
    ]
    assert snapshot(root) == before


def test_dry_run_of_daemon_json_shows_the_merge(cfg: Path, root: Path) -> None:
    (root / "etc/docker/daemon.json").write_text('{"debug": true, "default-runtime": "nvidia"}')
    result = apply(cfg, root, "--only", "docker", "--dry-run")
    lines = result.stdout.splitlines()
    start = lines.index("--- /etc/docker/daemon.json")
    assert lines[start : start + 8] == [
        "--- /etc/docker/daemon.json",
        "+++ /etc/docker/daemon.json",
        "@@ -1 +1,3 @@",
        '-{"debug": true, "default-runtime": "nvidia"}',
        "+{",
        '+  "debug": true',
        "+}",
        "would update /etc/docker/daemon.json",
    ]


def test_daemon_json_keeps_its_other_keys_and_is_backed_up(cfg: Path, root: Path) -> None:
    original = (root / "etc/docker/daemon.json").read_bytes()
    assert apply(cfg, root).returncode == 0
    assert json.loads((root / "etc/docker/daemon.json").read_text()) == {
        "log-driver": "journald",
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
        "data-root": "/srv/docker",
    }
    backups = list((root / "etc/docker").glob("daemon.json.ds01-bak.*"))
    assert len(backups) == 1 and BACKUP.search(backups[0].name)
    assert backups[0].read_bytes() == original


def test_only_ds01_files_and_backups_change(cfg: Path, root: Path) -> None:
    before = snapshot(root)
    assert apply(cfg, root).returncode == 0
    after = snapshot(root)
    changed = {p for p in after if before.get(p) != after[p]}
    backups = {p for p in changed if BACKUP.search(p)}
    assert changed - backups == set(MANAGED_MODES)
    assert sorted(BACKUP.sub("", p) for p in backups) == [
        "etc/bash.bashrc",
        "etc/docker/daemon.json",
        "etc/security/pam_env.conf",
    ]
    for backup in backups:
        assert after[backup] == before[BACKUP.sub("", backup)]
    for rel, content in UNRELATED.items():
        assert after[rel][0] == content
    assert after["etc/security/pam_env.conf"][0].decode().startswith(PAM_ENV)
    assert after["etc/bash.bashrc"][0].decode().endswith(BASHRC)


def test_the_shipped_nvidia_config_changes_in_two_lines_only(cfg: Path, root: Path) -> None:
    shipped = (FIXTURES / "nvidia-container-runtime-config.toml").read_text()
    target = root / "etc/nvidia-container-runtime/config.toml"
    target.parent.mkdir(parents=True)
    target.write_text(shipped)
    result = apply(cfg, root, "--only", "docker", "--dry-run")
    diff = [
        line
        for line in result.stdout.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff[:4] == [
        "-#accept-nvidia-visible-devices-as-volume-mounts = false",
        "-#accept-nvidia-visible-devices-envvar-when-unprivileged = true",
        "+accept-nvidia-visible-devices-as-volume-mounts = true",
        "+accept-nvidia-visible-devices-envvar-when-unprivileged = false",
    ]


def test_a_symlink_is_never_replaced(cfg: Path, root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "daemon.json"
    elsewhere.write_text('{"default-runtime": "nvidia"}')
    (root / "etc/docker/daemon.json").unlink()
    (root / "etc/docker/daemon.json").symlink_to(elsewhere)
    result = apply(cfg, root, "--only", "docker")
    assert result.returncode == 1
    assert (
        "left     /etc/docker/daemon.json left unchanged: it is a symlink "
        "(ds01 never replaces one)" in result.stdout.splitlines()
    )
    assert (root / "etc/docker/daemon.json").is_symlink()
    assert elsewhere.read_text() == '{"default-runtime": "nvidia"}'


def test_under_another_root_accounts_are_only_printed(tmp_path: Path, root: Path) -> None:
    group = f"ds01t{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "group.yaml"
    cfg.write_text(f"host:\n  device_access: group\n  device_group: {group}\n")
    result = apply(cfg, root, "--only", "devices")
    assert result.returncode == 1  # the modprobe file needs the group's gid
    lines = result.stdout.splitlines()
    assert (
        f"not run  groupadd --system {group}  (root is not /: the live system's accounts are "
        "left alone)" in lines
    )
    assert any(
        line.startswith("left     /etc/modprobe.d/ds01-nvidia.conf not written") for line in lines
    )
    with pytest.raises(KeyError):
        grp.getgrnam(group)


def test_group_mode_names_the_device_group_and_its_gid(
    users: Users, tmp_path: Path, root: Path
) -> None:
    group = users.group(f"ds01t{uuid.uuid4().hex[:8]}")
    cfg = tmp_path / "group.yaml"
    cfg.write_text(f"host:\n  device_access: group\n  device_group: {group}\n")
    assert apply(cfg, root, "--only", "devices").returncode == 0
    gid = grp.getgrnam(group).gr_gid
    modprobe = (root / "etc/modprobe.d/ds01-nvidia.conf").read_text().splitlines()
    assert modprobe[-1] == (
        f"options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID={gid} NVreg_DeviceFileMode=0660"
    )
    assert (
        f"chown root:{group} $$f && chmod 0660"
        in (root / "etc/udev/rules.d/70-ds01-nvidia.rules").read_text()
    )


def test_on_the_live_root_groups_are_created_and_users_added(users: Users, tmp_path: Path) -> None:
    """The real / (devices area only): creates the device group and adds the ds01 users; the
    two files it writes are removed (or restored) afterwards, and the group deleted."""
    need(os.geteuid() == 0, "applying to / needs root")
    need(
        not any(Path("/dev").glob("nvidia*")),
        "this machine has NVIDIA device nodes: the live apply would change them",
    )
    alice, bob = users.add(), users.add()
    group = f"ds01t{uuid.uuid4().hex[:8]}"
    users.groups.append(group)  # deleted by the fixture afterwards
    cfg = tmp_path / "live.yaml"
    cfg.write_text(
        f"host:\n  device_access: group\n  device_group: {group}\n"
        f"groups:\n  lab:\n    members: [{alice}, {bob}]\n"
    )
    files = [
        Path("/etc/udev/rules.d/70-ds01-nvidia.rules"),
        Path("/etc/modprobe.d/ds01-nvidia.conf"),
    ]
    with HostFiles(files):
        result = apply(cfg, Path("/"), "--only", "devices")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert f"ran      groupadd --system {group}" in lines
        assert f"ran      gpasswd --add {alice} {group}" in lines
        assert f"ran      gpasswd --add {bob} {group}" in lines
        entry = grp.getgrnam(group)
        assert sorted(entry.gr_mem) == sorted([alice, bob])
        assert f"NVreg_DeviceFileGID={entry.gr_gid} " in files[1].read_text()
        again = apply(cfg, Path("/"), "--only", "devices")
        assert again.stdout.splitlines()[-1] == "nothing to change: 2 files already current"


def test_a_symlinked_ds01_file_is_left_alone_too(cfg: Path, root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "unit"
    elsewhere.write_text("[Unit]\n")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/ds01d.service").symlink_to(elsewhere)
    result = apply(cfg, root, "--only", "systemd")
    assert result.returncode == 1
    assert (
        "left     /etc/systemd/system/ds01d.service left unchanged: it is a symlink "
        "(ds01 never replaces one)" in result.stdout.splitlines()
    )
    assert elsewhere.read_text() == "[Unit]\n"
