"""The host GPU process watch end to end: a real ds01d on a simulated machine whose file the
test rewrites to declare a real process of a real user as a GPU process."""

from __future__ import annotations

import json
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ds01.api.schemas import HostProcessOut
from ds01.inventory.sim import add_process, clear_processes
from support import MACHINES, Daemon, Users, loop_passes, short_tmp, wait_for

pytestmark = [pytest.mark.root]


CONFIG = """\
admin_group: ds01t-admins
gpu:
  sample_interval: 1s
host:
  grant_kill_grace: 2s
{extra}"""


class Env:
    def __init__(self, users: Users, daemon_factory: Any) -> None:
        self.users = users
        self.factory = daemon_factory
        self.dir = short_tmp()
        self.machine = self.dir / "machine.yaml"
        shutil.copy(MACHINES / "4xA100-40GB.yaml", self.machine)
        clear_processes(self.machine)  # its example pid may be a live process on this host
        self.procs: list[subprocess.Popen[bytes]] = []

    def daemon(self, extra: str = "") -> Daemon:
        d: Daemon = self.factory(CONFIG.format(extra=extra), machine=self.machine)
        return d

    def run_as(self, user: str, *argv: str) -> subprocess.Popen[bytes]:
        """A real process of `user` (setpriv execs, so its pid is the command's)."""
        pw = pwd.getpwnam(user)
        p = subprocess.Popen(
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *argv]
        )
        self.procs.append(p)
        return p

    def on_gpu(self, p: subprocess.Popen[bytes], unit: str = "2") -> None:
        add_process(self.machine, p.pid, unit, 2048, "python")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def env(users: Users, daemon_factory: Any) -> Iterator[Env]:
    e = Env(users, daemon_factory)
    yield e
    e.cleanup()


def listed(d: Daemon, pid: int, status: str) -> HostProcessOut | None:
    with d.client() as c:
        for p in c.host_processes():
            if p.pid == pid and p.status == status:
                return p
    return None


def host_actions(d: Daemon, pid: int) -> list[str]:
    with d.client() as c:
        return [e.action for e in c.events(kind="host") if e.details.get("pid") == pid]


def exit_status(p: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_a_users_host_gpu_process_without_a_grant_is_reported_not_killed(env: Env) -> None:
    user = env.users.add()
    d = env.daemon()
    job = env.run_as(user, "sleep", "300")
    env.on_gpu(job)
    p = wait_for(lambda: listed(d, job.pid, "violation"), "the violation to be listed", 20)
    assert (p.user, p.name, p.gpu_indices, p.cause, p.policy, p.action) == (
        user,
        "python",
        [2],
        "no_grant",
        "report",
        None,
    )
    loop_passes(d, "host-access", 3)  # the watch looked again: still one report, and it lives
    assert job.poll() is None
    assert host_actions(d, job.pid) == ["process_violation"]
    log = [json.loads(x) for x in (d.state_dir / "notifications.log").read_text().splitlines()]
    mine = [n for n in log if n["user"] == user]
    assert [n["topic"] for n in mine] == ["host_process"]
    assert f"Your process {job.pid} (python) is computing on GPU 2" in mine[0]["message"]
    assert "ds01 container deploy NAME --image IMAGE --gpus 1 " in mine[0]["message"]
    out = d.cli("admin", "host-processes", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["pid"], r["user"], r["status"]) for r in rows] == [(job.pid, user, "violation")]
    assert str(job.pid) in d.cli("admin", "host-processes").stdout
    assert d.cli("admin", "host-processes", user=user).returncode == 1


def test_the_message_suggests_a_request_the_users_limits_allow(env: Env) -> None:
    """A user limited to MIG slices is told to deploy with a slice, not with --gpus 1 that
    would be refused (issue 13 item 5)."""
    shutil.copy(MACHINES / "8xH100-mig-mixed.yaml", env.machine)
    clear_processes(env.machine)
    user = env.users.add()
    d = env.daemon("defaults:\n  max_gpueq: 2\n  allow_full_gpu: false\n")
    job = env.run_as(user, "sleep", "300")
    env.on_gpu(job, unit="0")
    wait_for(lambda: listed(d, job.pid, "violation"), "the violation to be listed", 20)
    log = [json.loads(x) for x in (d.state_dir / "notifications.log").read_text().splitlines()]
    (message,) = [n["message"] for n in log if n["user"] == user]
    assert "ds01 container deploy NAME --image IMAGE --mig 1g.10gb " in message, message
    assert "--gpus" not in message, message
    access = d.cli("access", user=user)
    assert access.returncode == 0 and "--mig 1g.10gb" in access.stdout, access.stdout


def test_terminate_policy_stops_the_process(env: Env) -> None:
    user = env.users.add()
    d = env.daemon("  host_process_policy: terminate\n")
    job = env.run_as(user, "sleep", "300")
    env.on_gpu(job)
    assert exit_status(job, 20) == -signal.SIGTERM
    wait_for(lambda: "process_exited" in host_actions(d, job.pid), "the exit to be recorded", 10)
    assert host_actions(d, job.pid) == [
        "process_violation",
        "process_sigterm",
        "process_exited",
    ]


def test_a_granted_users_process_is_left_alone(env: Env) -> None:
    user = env.users.add()
    d = env.daemon("  host_process_policy: terminate\n")
    assert d.cli("admin", "grant", user, "--for", "1h", "--reason", "r").returncode == 0
    job = env.run_as(user, "sleep", "300")
    env.on_gpu(job)
    wait_for(lambda: listed(d, job.pid, "granted"), "the process to be listed as granted", 20)
    loop_passes(d, "host-access", 2)  # the watch looked again and left it alone
    assert job.poll() is None
    assert host_actions(d, job.pid) == []


def test_grant_expiry_with_terminate_sends_sigterm(env: Env) -> None:
    user = env.users.add()
    d = env.daemon("  grant_expiry: terminate\n")
    assert d.cli("admin", "grant", user, "--for", "5s", "--reason", "r").returncode == 0
    job = env.run_as(user, "sleep", "300")
    env.on_gpu(job)
    wait_for(lambda: listed(d, job.pid, "granted"), "the process to be listed as granted", 20)
    assert exit_status(job, 20) == -signal.SIGTERM
    actions = wait_for(
        lambda: host_actions(d, job.pid) if "process_exited" in host_actions(d, job.pid) else None,
        "the exit to be recorded",
        10,
    )
    assert actions == ["process_after_grant", "process_sigterm", "process_exited"]
