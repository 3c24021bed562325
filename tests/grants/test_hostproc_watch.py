"""The host GPU process watch on a real database, a /proc tree the test writes, and — where a
signal must (or must not) arrive — real processes: mapping to containers and users, one report
per process, SIGTERM then SIGKILL, and the processes that are never signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds01.config import Config, parse_config_text
from ds01.identity import Caller
from ds01.inventory.sim import load_machine
from ds01.model.inventory import GpuProcess, MachineSample
from ds01.notify import Notifier
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.grants import GrantService
from ds01.services.hostproc import (
    HostProcess,
    HostProcessWatch,
    ProcReader,
    ProcStatus,
    container_id_from_cgroup,
    parse_stat,
)
from ds01.store import events
from ds01.store.db import Database
from support import wait_for

ROOT_DIR = Path(__file__).resolve().parents[2]
MACHINE = ROOT_DIR / "examples" / "machines" / "4xA100-40GB.yaml"
ROOT = Caller(uid=0, gid=0, pid=1, name="root", groups=frozenset())
NAMES = {0: "root", 1001: "alice", 1002: "bob", 1003: "carol"}
CID = "c" * 64
OTHER_CID = "d" * 64
HOST_CGROUP = "0::/user.slice/user-1003.slice/session-4.scope\n"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeProc:
    """A /proc tree with the files the watch reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sys/kernel/random").mkdir(parents=True)
        (root / "sys/kernel/random/boot_id").write_text("boot-1\n")

    def add(self, pid: int, uid: int, cgroup: str = HOST_CGROUP, started: int = 5000) -> None:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        fields = ["S", *(["0"] * 18), str(started), "0"]
        (d / "stat").write_text(f"{pid} (python3) {' '.join(fields)}\n")
        (d / "status").write_text(f"Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        (d / "cgroup").write_text(cgroup)

    def remove(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()


class World:
    def __init__(self, tmp: Path, config_text: str) -> None:
        self.tmp = tmp
        self.clock = Clock(1000.0)
        self.config: Config = parse_config_text(config_text, "test.yaml")
        self.db = Database(tmp / "ds01.db")
        self.allocs = AllocationService(self.db, lambda: self.config, clock=self.clock)
        self.machine = load_machine(MACHINE)
        self.allocs.sync_units(self.machine)
        (tmp / "pts").mkdir()
        self.log = tmp / "notifications.log"
        self.notifier = Notifier(
            self.log, utmp=tmp / "no-utmp", pts_dir=tmp / "pts", clock=self.clock
        )
        self.grants = GrantService(
            self.db,
            self.allocs,
            tmp / "run",
            self.notifier,
            clock=self.clock,
            manage_group=False,
            exists=lambda u: u in NAMES.values(),
        )
        self.proc = FakeProc(tmp / "proc")
        self.procs: list[GpuProcess] = []
        self.own_pid = os.getpid()
        self.watch = self.new_watch()

    def new_watch(self) -> HostProcessWatch:
        w = HostProcessWatch(
            self.db,
            self.allocs,
            self.grants,
            self.notifier,
            reader=ProcReader(self.proc.root),
            clock=self.clock,
            own_pid=self.own_pid,
            user_of=NAMES.get,
        )
        self.grants.on_ended[:] = [w.grant_ended]
        return w

    def gpu_process(self, pid: int, uid: int, cgroup: str = HOST_CGROUP, gpu: int = 0) -> None:
        self.proc.add(pid, uid, cgroup)
        g = self.machine.gpus[gpu]
        self.procs.append(GpuProcess(pid, g.uuid, 1024, "python3", unit_uuid=g.uuid))

    def scan(self) -> None:
        self.grants.tick()
        self.watch.scan(
            MachineSample(
                gpus=self.machine.gpus, processes=tuple(self.procs), source="test", taken_at=None
            )
        )

    def status(self) -> list[tuple[int, str]]:
        return [(p.pid, p.status.value) for p in self.watch.processes()]

    def events(self) -> list[events.Event]:
        with self.db.transaction(immediate=False) as conn:
            return events.query(conn, kind="host")

    def actions(self) -> list[tuple[str, int]]:
        return [(e.action, int(e.details["pid"])) for e in self.events() if "pid" in e.details]

    def notes(self, user: str) -> list[str]:
        if not self.log.exists():
            return []
        items = [json.loads(x) for x in self.log.read_text().splitlines()]
        return [str(i["message"]) for i in items if i["user"] == user]

    def live_container_allocation(self, container_id: str) -> int:
        bob = Caller(uid=1002, gid=1002, pid=9, name="bob", groups=frozenset())
        a = self.allocs.allocate(bob, AllocationRequest(RequestKind.GPUS, count=1, container="c"))
        self.allocs.activate(a.id, container_id=container_id, actor="bob", reason="test")
        return a.id


CONFIG = """\
exempt_users: [alice]
defaults:
  max_gpueq: 2
  allow_full_gpu: true
host:
  grant_kill_grace: 5s
"""


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, CONFIG)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that signals can reach (the fake /proc says who owns it)."""
    p = subprocess.Popen(["sleep", "300"])
    yield p
    if p.poll() is None:
        p.kill()
    p.wait()


def _dead(p: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _ignores(pid: int, sig: signal.Signals) -> bool:
    """Whether the process ignores `sig` now: the SigIgn mask of /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


# ---- pure parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("0::/user.slice/user-1003.slice/session-4.scope\n", None),
        (f"0::/system.slice/docker-{CID}.scope\n", CID),
        (f"0::/ds01-bob.slice/docker-{CID}.scope\n", CID),
        (f"0::/ds01/bob/{CID}\n", CID),
        (f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n0::/\n", CID),
        (f"0::/docker/{CID}/docker/{OTHER_CID}\n", CID),
        ("0::/system.slice/containerd.service\n", None),
        (f"0::/user.slice/{CID[:63]}\n", None),
        ("", None),
    ],
    ids=[
        "a login session is a host process",
        "systemd driver, default parent",
        "systemd driver, ds01's per-user slice",
        "cgroupfs driver, ds01's per-user parent",
        "cgroup v1 lines",
        "a container nested in a container belongs to the outer one",
        "a service is a host process",
        "63 hex digits are not a container id",
        "no cgroup file content",
    ],
)
def test_container_id_from_cgroup(cgroup: str, expected: str | None) -> None:
    assert container_id_from_cgroup(cgroup) == expected


def test_parse_stat_takes_comm_up_to_the_last_parenthesis() -> None:
    text = "4242 (my (odd) prog) S " + " ".join(["0"] * 18) + " 123456 0 0\n"
    assert parse_stat(text) == ("my (odd) prog", "S", 123456)


# ---- classification and reports -------------------------------------------------------------


def test_each_gpu_process_is_mapped_to_its_container_or_its_user(world: World) -> None:
    alloc_id = world.live_container_allocation(CID)
    world.grants.grant(ROOT, "bob", duration="1h", permanent=False, reason="r")
    world.gpu_process(101, 0)
    world.gpu_process(102, 1001)
    world.gpu_process(103, 1002)
    world.gpu_process(104, 1003)
    world.gpu_process(105, 1003, f"0::/ds01-bob.slice/docker-{CID}.scope\n")
    world.gpu_process(106, 1003, f"0::/system.slice/docker-{OTHER_CID}.scope\n")
    world.gpu_process(107, 4242)
    world.procs.append(GpuProcess(108, world.machine.gpus[0].uuid, None, "gone"))  # no /proc
    world.scan()
    assert world.status() == [
        (104, "violation"),
        (107, "violation"),
        (106, "container_unallocated"),
        (101, "system"),
        (102, "exempt"),
        (103, "granted"),
        (105, "container"),
    ]
    by_pid = {p.pid: p for p in world.watch.processes()}
    assert (by_pid[105].container_id, by_pid[105].allocation_id) == (CID, alloc_id)
    assert (by_pid[107].user, by_pid[107].uid) == (None, 4242)


def test_a_violation_is_reported_once_with_a_message_to_its_user(world: World) -> None:
    world.gpu_process(104, 1003, gpu=2)
    for _ in range(3):
        world.scan()
        world.clock.t += 1
    assert world.actions() == [("process_violation", 104)]
    notes = world.notes("carol")
    assert len(notes) == 1
    assert "Your process 104 (python3) is computing on GPU 2" in notes[0]
    assert "ds01 container deploy" in notes[0]
    [p] = world.watch.processes()
    assert (p.cause, p.policy, p.action) == ("no_grant", "report", None)


def test_a_restart_does_not_report_the_same_process_again(world: World) -> None:
    world.gpu_process(104, 1003)
    world.scan()
    world.watch = world.new_watch()
    world.scan()
    assert world.actions() == [("process_violation", 104)]
    assert world.status() == [(104, "violation")]


def test_a_process_that_is_gone_is_dropped(world: World) -> None:
    world.gpu_process(104, 1003)
    world.scan()
    world.proc.remove(104)
    world.scan()
    assert world.status() == []


# ---- signals (real processes) ----------------------------------------------------------------


def test_terminate_policy_sends_sigterm_to_a_violating_process(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    w = World(tmp_path, CONFIG + "  host_process_policy: terminate\n")
    w.gpu_process(sleeper.pid, 1003)
    w.scan()
    assert _dead(sleeper) == -signal.SIGTERM
    w.proc.remove(sleeper.pid)
    w.scan()
    assert w.actions() == [
        ("process_violation", sleeper.pid),
        ("process_sigterm", sleeper.pid),
        ("process_exited", sleeper.pid),
    ]
    assert "It is being stopped now (SIGTERM, then SIGKILL after 5s)." in w.notes("carol")[0]


def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(tmp_path: Path) -> None:
    w = World(tmp_path, CONFIG + "  host_process_policy: terminate\n")
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
    try:
        wait_for(lambda: _ignores(stubborn.pid, signal.SIGTERM), "the shell's trap on TERM")
        w.gpu_process(stubborn.pid, 1003)
        w.scan()
        assert _dead(stubborn, timeout=1.5) is None
        w.clock.t += 4
        w.scan()
        assert stubborn.poll() is None
        w.clock.t += 1
        w.scan()
        assert _dead(stubborn) == -signal.SIGKILL
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
        stubborn.wait()
    assert [a for a, _ in w.actions()] == [
        "process_violation",
        "process_sigterm",
        "process_sigkill",
    ]


@pytest.mark.parametrize(
    "cgroup",
    [f"0::/ds01-bob.slice/docker-{CID}.scope\n", f"0::/docker/{OTHER_CID}\n"],
    ids=["a container with a live allocation", "a container without an allocation"],
)
def test_a_container_process_is_never_signalled(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], cgroup: str
) -> None:
    w = World(tmp_path, CONFIG.replace("5s", "1s") + "  host_process_policy: terminate\n")
    w.live_container_allocation(CID)
    w.gpu_process(sleeper.pid, 1003, cgroup)
    for _ in range(3):
        w.scan()
        w.clock.t += 2
    assert sleeper.poll() is None
    assert w.actions() == []


def test_a_granted_users_process_is_left_alone_even_with_terminate(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    w = World(tmp_path, CONFIG + "  host_process_policy: terminate\n")
    w.grants.grant(ROOT, "carol", duration="1h", permanent=False, reason="r")
    w.gpu_process(sleeper.pid, 1003)
    w.scan()
    assert sleeper.poll() is None
    assert (w.status(), w.actions()) == ([(sleeper.pid, "granted")], [])


def test_when_a_grant_ends_with_terminate_its_host_processes_get_sigterm(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    w = World(tmp_path, CONFIG + "  grant_expiry: terminate\n")  # host_process_policy: report
    w.grants.grant(ROOT, "carol", duration="10s", permanent=False, reason="r")
    w.gpu_process(sleeper.pid, 1003)
    w.scan()
    assert w.status() == [(sleeper.pid, "granted")]
    w.clock.t += 10
    w.scan()
    assert _dead(sleeper) == -signal.SIGTERM
    assert w.actions() == [
        ("process_after_grant", sleeper.pid),
        ("process_sigterm", sleeper.pid),
    ]
    assert any("these processes still compute" in n for n in w.notes("carol"))


def test_when_a_grant_ends_with_warn_its_host_processes_are_reported_only(
    world: World, sleeper: subprocess.Popen[bytes]
) -> None:
    world.grants.grant(ROOT, "carol", duration="1h", permanent=False, reason="r")
    world.gpu_process(sleeper.pid, 1003)
    world.scan()
    world.grants.revoke(ROOT, "carol", "r")
    world.scan()
    world.scan()
    assert sleeper.poll() is None
    assert world.actions() == [("process_after_grant", sleeper.pid)]
    [p] = world.watch.processes()
    assert (p.status, p.cause, p.policy) == (ProcStatus.VIOLATION, "grant_ended", "report")


def test_the_daemons_own_pid_is_never_signalled(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    w = World(tmp_path, CONFIG + "  host_process_policy: terminate\n")
    w.own_pid = sleeper.pid
    w.watch = w.new_watch()
    w.gpu_process(sleeper.pid, 1003)
    w.scan()
    assert sleeper.poll() is None
    assert [a for a, _ in w.actions()] == ["process_violation", "process_signal_refused"]


@pytest.mark.parametrize(
    ("pid", "uid", "why"),
    [
        (1, 1003, "pid 1 and ds01d itself are never signalled"),
        (0, 1003, "pid 1 and ds01d itself are never signalled"),
        (4242, 0, "root's processes are never signalled"),
    ],
    ids=["pid 1", "pid 0", "a root process"],
)
def test_never_signalled_before_any_proc_read(world: World, pid: int, uid: int, why: str) -> None:
    p = HostProcess(pid, 1, uid, "x", "x", ProcStatus.VIOLATION, 0.0)
    assert world.watch._may_signal(p) == why
