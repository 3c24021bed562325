"""Single doctor checks, called as functions on a Context, against real files, real users, real
dpkg and a real ds01d. GPU-less machine: nvidia-smi stand-ins are copies of /bin/true (an ELF no
package owns at that path) or scripts, placed in a temp directory given as the PATH to search;
device nodes are plain files under a temp --root."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from host_support import ds01

from ds01.config import Config, parse_config_text
from ds01.config.schema import GPU_HOST_GROUP
from ds01.host.doctor import (
    Context,
    Status,
    devices,
    docker,
    nvidia_smi,
    profile,
    run_doctor,
    state,
)
from ds01.host.doctor import daemon as daemon_checks
from ds01.paths import Paths
from support import Daemon, Users

REFUSER = '#!/bin/sh\necho "nvidia-smi: only video members may query GPUs" >&2\nexit 1\n'


def ctx_for(
    root: Path, config: Config | None = None, run_dir: Path | None = None, **kw: object
) -> Context:
    paths = Paths.resolve(
        root / "ds01.yaml", state_dir="/var/lib/ds01", run_dir=run_dir or "/run/ds01"
    )
    return Context(root, paths, config or parse_config_text("", "t.yaml"), **kw)  # type: ignore[arg-type]


@pytest.fixture
def pub(tmp_path: Path) -> Iterator[Path]:
    """A temp dir every user can traverse (pytest's own tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="ds01-doctor-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def bin_dir(base: Path, content: bytes | None = None, link_to: Path | None = None) -> Path:
    d = base / f"bin{uuid.uuid4().hex[:4]}"
    d.mkdir()
    d.chmod(0o755)
    target = d / "nvidia-smi"
    if link_to is not None:
        target.symlink_to(link_to)
    else:
        target.write_bytes(content if content is not None else Path("/bin/true").read_bytes())
        target.chmod(0o755)
    return d


# ---- nvidia-smi ---------------------------------------------------------------------------------


def test_dpkg_names_the_package_of_a_packaged_file() -> None:
    ctx = ctx_for(Path("/"))
    assert nvidia_smi.dpkg_owner(ctx, ["/usr/bin/true"]) == "coreutils"
    assert nvidia_smi.dpkg_owner(ctx, ["/usr/local/bin/not-a-packaged-file"]) is None


def test_an_elf_no_package_owns_is_a_warning(tmp_path: Path) -> None:
    d = bin_dir(tmp_path)
    result = nvidia_smi.check_not_shadowed(ctx_for(Path("/"), user_path=(str(d),)))
    assert result.status is Status.WARN
    assert result.evidence == [f"{d}/nvidia-smi: ELF executable, owned by no package"]
    assert result.repair is None  # an ELF is never touched


def test_a_symlink_to_a_script_fails_and_fix_moves_the_link_aside(tmp_path: Path) -> None:
    script = tmp_path / "wrapper.sh"
    script.write_text(REFUSER)
    d = bin_dir(tmp_path, link_to=script)
    ctx = ctx_for(Path("/"), user_path=(str(d),))
    report = run_doctor(ctx, fix=True, only=("nvidia-smi.not-shadowed",))
    assert report.fixed[0].startswith(
        f"nvidia-smi.not-shadowed: moved {d}/nvidia-smi aside to nvidia-smi.ds01-bak."
    )
    assert not (d / "nvidia-smi").exists() and script.read_text() == REFUSER
    assert report.results[0].status is Status.WARN  # nothing left: no nvidia-smi at all


def test_an_alias_in_the_startup_files_fails_without_a_repair(tmp_path: Path) -> None:
    (tmp_path / "etc/profile.d").mkdir(parents=True)
    (tmp_path / "etc/profile.d/gpu.sh").write_text("# wrap\nalias nvidia-smi='gpu-guard'\n")
    result = nvidia_smi.check_not_shadowed(ctx_for(tmp_path))
    assert result.status is Status.FAIL
    assert result.evidence == [
        "/etc/profile.d/gpu.sh:2: alias nvidia-smi='gpu-guard'",
        "not run: a wrapper is judged by running it on the live host (--root)",
    ]
    assert result.repair is None


def test_runs_for_user_fails_for_a_refusing_wrapper_and_passes_for_the_binary(
    users: Users, pub: Path
) -> None:
    user = users.add()
    config = parse_config_text(f"groups:\n  lab:\n    members: [{user}]\n", "t.yaml")
    refusing = bin_dir(pub, REFUSER.encode())
    result = nvidia_smi.check_runs_for_user(ctx_for(Path("/"), config, user_path=(str(refusing),)))
    assert result.status is Status.FAIL
    assert result.evidence == [
        f"as {user}: {refusing}/nvidia-smi -L → exit 1",
        "nvidia-smi: only video members may query GPUs",
    ]
    binary = bin_dir(pub)
    result = nvidia_smi.check_runs_for_user(ctx_for(Path("/"), config, user_path=(str(binary),)))
    assert result.status is Status.PASS


# ---- devices ------------------------------------------------------------------------------------


def test_the_uvm_gate_is_checked_and_repaired(tmp_path: Path) -> None:
    created = subprocess.run(["getent", "group", GPU_HOST_GROUP], capture_output=True).returncode
    if created:
        subprocess.run(["groupadd", "--system", GPU_HOST_GROUP], check=True)
    try:
        (tmp_path / "dev").mkdir()
        for name in ("nvidiactl", "nvidia0", "nvidia-uvm", "nvidia-uvm-tools"):
            (tmp_path / "dev" / name).write_bytes(b"")
            (tmp_path / "dev" / name).chmod(0o666)
        config = parse_config_text("host:\n  compute_gate: uvm\n", "t.yaml")
        ctx = ctx_for(tmp_path, config)
        first = devices.check_uvm_gate(ctx)
        assert first.status is Status.FAIL
        assert first.summary == "the uvm nodes are not gated: every user can run CUDA on the host"
        assert devices.check_mode(ctx).status is Status.PASS  # query nodes stay open
        report = run_doctor(ctx, fix=True, only=("devices.uvm-gate",))
        assert report.results[0].status is Status.PASS
        assert (tmp_path / "dev/nvidia-uvm").stat().st_mode & 0o777 == 0o660
        assert (tmp_path / "dev/nvidiactl").stat().st_mode & 0o777 == 0o666
    finally:
        if created:
            subprocess.run(["groupdel", GPU_HOST_GROUP], capture_output=True)


# ---- profile / PAM ------------------------------------------------------------------------------


def test_pam_and_sshd_configuration(tmp_path: Path) -> None:
    pam = tmp_path / "etc/pam.d"
    pam.mkdir(parents=True)
    (pam / "common-session").write_text("session required pam_unix.so\n")
    (pam / "su").write_text("session required pam_env.so readenv=1\n@include common-session\n")
    (pam / "sshd").write_text("@include common-session\n")
    ssh = tmp_path / "etc/ssh"
    (ssh / "sshd_config.d").mkdir(parents=True)
    (ssh / "sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n")
    (ssh / "sshd_config.d/site.conf").write_text("# first value wins\nUsePAM no\n")
    result = profile.check_pam_env(ctx_for(tmp_path))
    assert result.status is Status.WARN
    assert result.summary == (
        "sessions of sshd, sshd (UsePAM no) do not start with host CUDA hidden"
    )
    (pam / "common-session").write_text("session required pam_env.so\n")
    (ssh / "sshd_config.d/site.conf").write_text("UsePAM yes\n")
    assert profile.check_pam_env(ctx_for(tmp_path)).status is Status.PASS


# ---- docker -------------------------------------------------------------------------------------


def test_nvidia_default_runtime_fails_and_fix_removes_only_that_key(tmp_path: Path) -> None:
    path = tmp_path / "etc/docker/daemon.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"default-runtime": "nvidia", "data-root": "/srv/docker"}')
    ctx = ctx_for(tmp_path)
    assert docker.check_no_nvidia_default(ctx).status is Status.FAIL
    report = run_doctor(ctx, fix=True, only=("docker.no-nvidia-default",))
    assert report.results[0].status is Status.PASS
    assert json.loads(path.read_text()) == {"data-root": "/srv/docker"}


def test_a_ds01_user_in_the_docker_group_fails(users: Users) -> None:
    if subprocess.run(["getent", "group", "docker"], capture_output=True).returncode:
        users.group("docker")
    inside, outside = users.add(groups=("docker",)), users.add()
    config = parse_config_text(f"groups:\n  g:\n    members: [{inside}, {outside}]\n", "t.yaml")
    result = docker.check_users_not_in_docker_group(ctx_for(Path("/"), config))
    assert result.status is Status.FAIL
    assert result.evidence == [f"in docker: {inside}"]
    assert result.repair is None  # left to the admin


# ---- daemon, host-access, state, config ----------------------------------------------------------


def test_host_access_file_problems(tmp_path: Path) -> None:
    config = parse_config_text("exempt_users: [prof]\n", "t.yaml")
    ctx = ctx_for(tmp_path, config)
    assert daemon_checks.check_host_access(ctx).status is Status.FAIL  # missing: fail closed
    path = tmp_path / "run/ds01/host-access"
    path.parent.mkdir(parents=True)
    path.write_text("# x\nstudent grant 0\n")
    path.chmod(0o666)
    writable = daemon_checks.check_host_access(ctx)
    assert writable.status is Status.FAIL and "anyone could grant" in writable.summary
    path.chmod(0o644)
    warn = daemon_checks.check_host_access(ctx)
    assert (warn.status, warn.summary) == (
        Status.WARN,
        "/run/ds01/host-access: exempt users missing: prof",
    )
    path.write_text("prof exempt 0\n")
    assert daemon_checks.check_host_access(ctx).status is Status.PASS


def test_state_integrity_reads_without_writing(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    assert state.check_state_integrity(ctx).status is Status.WARN  # no database yet
    db = tmp_path / "var/lib/ds01/ds01.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not an SQLite database, it only pretends to be one" * 100)
    before = db.read_bytes()
    assert state.check_state_integrity(ctx).status is Status.FAIL
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["ds01.db"]


def test_an_invalid_config_fails_and_the_checks_needing_it_skip(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("host:\n  device_access: wide-open\n")
    result = ds01("--config", str(cfg), "doctor", "--root", str(tmp_path), "--json")
    assert result.returncode == 2
    checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["config.valid"]["status"] == "fail"
    assert checks["config.valid"]["evidence"][0].startswith(f"{cfg}:2:18: host.device_access:")
    assert checks["devices.mode"] == {
        "id": "devices.mode",
        "status": "skip",
        "summary": "config invalid (see config.valid)",
        "evidence": [],
        "fix": None,
    }


def test_daemon_checks_against_a_real_ds01d(daemon_factory: object) -> None:
    d: Daemon = daemon_factory()  # type: ignore[operator]
    result = ds01(
        "--run-dir",
        str(d.run_dir),
        "--config",
        str(d.config_path),
        "doctor",
        "--json",
        "--only",
        "daemon.running",
        "--only",
        "daemon.sockets",
    )
    checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["daemon.running"]["status"] == "pass"
    assert checks["daemon.running"]["evidence"][0].startswith("status ok")
    assert f"{d.run_dir}/api.sock: 0666" in checks["daemon.sockets"]["evidence"]
    d.stop()
    result = ds01(
        "--run-dir",
        str(d.run_dir),
        "--config",
        str(d.config_path),
        "doctor",
        "--json",
        "--only",
        "daemon.running",
    )
    running = json.loads(result.stdout)["checks"][0]
    assert (running["status"], result.returncode) == ("fail", 2)
    assert running["fix"] == "Start it: systemctl enable --now ds01d (logs: journalctl -u ds01d)."


def test_live_only_checks_skip_under_another_root(tmp_path: Path) -> None:
    report = run_doctor(ctx_for(tmp_path), only=("daemon", "profile"))
    skipped = {r.id for r in report.results if r.status is Status.SKIP}
    assert {
        "daemon.running",
        "daemon.sockets",
        "profile.cuda-hidden",
        "profile.cuda-exempt",
        "profile.cuda-granted",
        "profile.docker-host",
    } <= skipped


def test_the_running_engine_is_asked_for_its_default_runtime(docker_host: str) -> None:
    """The private test engine (runc default): its DefaultRuntime is part of the evidence."""
    config = parse_config_text(f"docker:\n  host: {docker_host}\n", "t.yaml")
    result = docker.check_no_nvidia_default(ctx_for(Path("/"), config))
    assert "running engine: DefaultRuntime = runc" in result.evidence


@pytest.mark.parametrize(
    ("params", "status"),
    [
        pytest.param(
            "EnableMSI: 1\nDeviceFileUID: 0\nDeviceFileGID: 0\nDeviceFileMode: 438\n",
            Status.PASS,
            id="0666 root (438 decimal) matches device_access: open",
        ),
        pytest.param(
            "NVreg_DeviceFileUID: 0\nNVreg_DeviceFileGID: 44\nNVreg_DeviceFileMode: 432\n",
            Status.WARN,
            id="0660 video (the NVreg_ spelling) does not match open",
        ),
    ],
)
def test_driver_params(tmp_path: Path, params: str, status: Status) -> None:
    """A copy of /proc/driver/nvidia/params under --root (real drivers print the mode in
    decimal: 438 = 0666, 432 = 0660)."""
    path = tmp_path / "proc/driver/nvidia/params"
    path.parent.mkdir(parents=True)
    path.write_text(params)
    assert devices.check_driver_params(ctx_for(tmp_path)).status is status
