"""Layer 1 for real: `ds01 host apply --only profile` installed into the REAL / of this (throwaway,
root) machine, then real sessions of real users through every login path:

    su - USER -c CMD          PAM (su-l) + login shell: /etc/profile → profile.d
    su USER -c CMD            PAM (su), non-login non-interactive bash: BASH_ENV from pam_env
    sudo -iu USER CMD         PAM (sudo-i/sudo) + login shell (skipped when sudo is absent)
    bash -lc CMD              no PAM at all (setpriv): /etc/profile → profile.d
    bash -ic CMD              no PAM, interactive non-login: the block atop /etc/bash.bashrc
    ssh USER@127.0.0.1 CMD    a private sshd (UsePAM yes, own host key and port, key login):
                              PAM (sshd) + bash run by sshd reads /etc/bash.bashrc first

For a non-exempt user CUDA_VISIBLE_DEVICES must be set and empty; for an exempt user and a user
with a live grant it must be unset; an expired grant counts as none. The host-access file is
written by the test at a --run-dir the rendering points to. Everything touched in /etc is backed
up and restored; the users, the gate group and the sshd are removed or stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from host_support import HostFiles, ds01

from support import Users, need, wait_for

PROBE = 'printf "[%s]" "${CUDA_VISIBLE_DEVICES-unset}"'
TOUCHED = [
    Path("/etc/profile.d/ds01-host.sh"),
    Path("/etc/bash.bashrc"),
    Path("/etc/security/pam_env.conf"),
]


@dataclass
class Host:
    run_dir: Path
    config: Path
    plain: str  # in the lab, not exempt, no grant
    exempt: str
    granted: str  # live grant
    expired: str  # grant ended
    outsider: str  # not a ds01 user, not in the gate group
    gate_group: str

    def write_access(self, now: float | None = None) -> None:
        t = int(now or time.time())
        path = self.run_dir / "host-access"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            "# written by the test\n"
            f"{self.exempt} exempt 0\n{self.granted} grant {t + 3600}\n"
            f"{self.expired} grant {t - 10}\n"
        )
        tmp.chmod(0o644)
        tmp.replace(path)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    need(os.geteuid() == 0, "installing into / and creating users needs root")
    for tool in ("su", "setpriv", "useradd", "bash"):
        need(shutil.which(tool) is not None, f"{tool} is not installed")
    users = Users()
    run_dir = Path(tempfile.mkdtemp(prefix="ds01-login-", dir="/tmp"))
    run_dir.chmod(0o755)
    try:
        gate = users.group(f"ds01tg{uuid.uuid4().hex[:6]}")
        plain = users.add(groups=(gate,))
        exempt, granted, expired, outsider = users.add(), users.add(), users.add(), users.add()
        config = run_dir / "ds01.yaml"
        config.write_text(
            f"exempt_users: [{exempt}]\n"
            f"groups:\n  lab:\n    members: [{plain}, {exempt}, {granted}, {expired}]\n"
            f"host:\n  gate_group: {gate}\n"
        )
        h = Host(run_dir, config, plain, exempt, granted, expired, outsider, gate)
        with HostFiles(TOUCHED):
            result = ds01(
                "--config",
                str(config),
                "host",
                "apply",
                "--only",
                "profile",
                "--run-dir",
                str(run_dir),
            )
            assert result.returncode == 0, result.stdout + result.stderr
            h.write_access()
            yield h
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        users.cleanup()


def _clean_env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=env or _clean_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def setpriv(user: str, *args: str) -> list[str]:
    import pwd

    pw = pwd.getpwnam(user)
    return [
        "setpriv",
        f"--reuid={pw.pw_uid}",
        f"--regid={pw.pw_gid}",
        "--init-groups",
        "env",
        "-i",
        f"HOME={pw.pw_dir}",
        f"USER={user}",
        "PATH=/usr/bin:/bin",
        *args,
    ]


# ---- the private sshd ---------------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    key: Path

    def run(self, user: str, command: str) -> str:
        return run(
            [
                "ssh",
                "-i",
                str(self.key),
                "-p",
                str(self.port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "IdentitiesOnly=yes",
                f"{user}@127.0.0.1",
                command,
            ]
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(host: Host) -> Iterator[Sshd]:
    """sshd on 127.0.0.1:<free port> with its own host key and config (UsePAM yes), and a
    client key authorised for the test users. Stopped by pid afterwards."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    need(Path(binary).exists(), "openssh-server is not installed (.ci/setup-system.sh installs it)")
    need(shutil.which("ssh") is not None, "openssh-client is not installed")
    base = Path(tempfile.mkdtemp(prefix="ds01-sshd-", dir="/tmp"))
    base.chmod(0o755)
    for name in ("hostkey", "clientkey"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True
        )
    import pwd

    for user in (host.plain, host.exempt, host.granted, host.expired):
        pw = pwd.getpwnam(user)
        ssh_dir = Path(pw.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text((base / "clientkey.pub").read_text())
        keys.chmod(0o600)
        os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
        os.chown(keys, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    (base / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'hostkey'}\n"
        f"PidFile {base / 'sshd.pid'}\nUsePAM yes\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nAcceptEnv LANG LC_*\n"
    )
    privsep = Path("/run/sshd")
    made_privsep = not privsep.exists()
    privsep.mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "-D", "-f", str(base / "sshd_config"), "-E", str(base / "sshd.log")]
    )

    def listening() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited {proc.returncode}: {(base / 'sshd.log').read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, f"sshd to listen on port {port}", 15, interval=0.05)
        yield Sshd(port, base / "clientkey")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(base, ignore_errors=True)
        if made_privsep:
            shutil.rmtree(privsep, ignore_errors=True)


# ---- every path × every kind of user -------------------------------------------------------------

PATHS = ["su -", "su (non-login)", "sudo -iu", "bash -lc (no PAM)", "bash -ic (no PAM)", "ssh"]
KINDS = [("plain", "[]"), ("exempt", "[unset]"), ("granted", "[unset]"), ("expired", "[]")]


def through(path: str, user: str, command: str, request: pytest.FixtureRequest) -> str:
    if path == "su -":
        return run(["su", "-", user, "-c", command])
    if path == "su (non-login)":
        return run(["su", user, "-c", command])
    if path == "sudo -iu":
        need(shutil.which("sudo") is not None, "sudo is not installed")
        return run(["sudo", "-iu", user, "bash", "-c", command])
    if path == "bash -lc (no PAM)":
        return run(setpriv(user, "bash", "-lc", command))
    if path == "bash -ic (no PAM)":
        return run(setpriv(user, "bash", "-ic", command))
    assert path == "ssh"
    sshd: Sshd = request.getfixturevalue("sshd")
    return sshd.run(user, command)


@pytest.mark.parametrize(("kind", "expected"), KINDS, ids=[k for k, _ in KINDS])
@pytest.mark.parametrize("path", PATHS)
def test_cuda_is_hidden_exactly_for_users_without_exemption_or_live_grant(
    host: Host, path: str, kind: str, expected: str, request: pytest.FixtureRequest
) -> None:
    user = getattr(host, kind)
    assert through(path, user, PROBE, request) == expected


def test_pam_overrides_an_inherited_value(host: Host) -> None:
    """`su` without '-' keeps the caller's environment; PAM still hides CUDA first."""
    env = {**_clean_env(), "CUDA_VISIBLE_DEVICES": "0,1"}
    assert run(["su", host.plain, "-c", PROBE], env=env) == "[]"


def test_a_missing_host_access_file_hides_cuda_from_exempt_users_too(host: Host) -> None:
    path = host.run_dir / "host-access"
    path.rename(host.run_dir / "host-access.away")
    try:
        assert run(["su", "-", host.exempt, "-c", PROBE]) == "[]"
        assert run(setpriv(host.granted, "bash", "-lc", PROBE)) == "[]"
    finally:
        (host.run_dir / "host-access.away").rename(path)


def test_docker_host_points_at_the_gate_for_gate_group_members_only(host: Host) -> None:
    probe = 'printf "[%s]" "${DOCKER_HOST-unset}"'
    assert run(["su", "-", host.plain, "-c", probe]) == f"[unix://{host.run_dir}/docker.sock]"
    assert run(["su", "-", host.outsider, "-c", probe]) == "[unset]"


def test_scripts_under_set_eu_and_xtrace_are_not_disturbed(host: Host) -> None:
    """BASH_ENV runs the profile in every non-interactive bash: it must not fail under -eu nor
    print its own lines under -x."""
    script = "bash -euxo pipefail -c 'echo ok:${CUDA_VISIBLE_DEVICES-unset}' 2>&1"
    assert run(["su", host.plain, "-c", script]).endswith("ok:")
    out = subprocess.run(
        ["su", host.exempt, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        check=True,
    ).stdout
    assert "ds01_" not in out and out.strip().splitlines()[-1] == "ok:unset"


def test_doctor_starts_real_login_shells_and_passes(host: Host) -> None:
    import json

    result = ds01(
        "--config",
        str(host.config),
        "--run-dir",
        str(host.run_dir),
        "doctor",
        "--json",
        "--only",
        "profile",
    )
    checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert {k: c["status"] for k, c in checks.items()} == {
        "profile.current": "pass",
        "profile.pam-env": "pass",
        "profile.cuda-hidden": "pass",
        "profile.cuda-exempt": "pass",
        "profile.cuda-granted": "pass",
        "profile.docker-host": "pass",
    }
    assert checks["profile.cuda-hidden"]["evidence"] == [
        f"su - {host.plain}: CUDA_VISIBLE_DEVICES=[]"
    ]


def test_doctor_fails_when_the_login_path_lets_cuda_through(host: Host) -> None:
    """A careless edit of the profile script exports a GPU: the doctor sees a non-exempt user's
    real login shell with host GPUs visible and the file drifted; --fix re-renders the file
    (keeping a backup) and both checks pass again."""
    import json

    script = Path("/etc/profile.d/ds01-host.sh")
    saved = script.read_text()
    args = ("--config", str(host.config), "--run-dir", str(host.run_dir), "doctor")
    only = ("--only", "profile.cuda-hidden", "--only", "profile.current")
    script.write_text("export CUDA_VISIBLE_DEVICES=0\n")
    try:
        result = ds01(*args, "--json", *only)
        checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
        assert result.returncode == 2
        assert checks["profile.current"]["status"] == "fail"
        assert checks["profile.cuda-hidden"]["summary"] == (
            f"non-exempt user {host.plain} can compute on the host GPUs outside containers"
        )
        assert checks["profile.cuda-hidden"]["evidence"] == [
            f"su - {host.plain}: CUDA_VISIBLE_DEVICES=[0]"
        ]
        fixed = ds01(*args, "--fix", *only)
        assert fixed.returncode == 0, fixed.stdout
        lines = fixed.stdout.splitlines()
        assert any(
            line.startswith("fixed: profile.current: updated  /etc/profile.d/ds01-host.sh (backup")
            for line in lines
        )
        assert (
            f"PASS  profile.cuda-hidden: non-exempt user {host.plain}: "
            'CUDA_VISIBLE_DEVICES=""' in lines
        )
        assert script.read_text() == saved
    finally:
        script.write_text(saved)
        for backup in script.parent.glob("ds01-host.sh.ds01-bak.*"):
            backup.unlink()
