"""A container's CPU use for the idle decision (issue 15, items 1-2; lifecycle/cpu.py and the
container part of lifecycle/activity.py): the cgroup found from /proc/PID/cgroup for both of
Docker's cgroup drivers, cgroup v2 and v1 files, unknown as None, and a real busy container
told from a sleeping one on the private engine."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest

from ds01.lifecycle.activity import Signal, allocation_activity, container_activity, unit_activity
from ds01.lifecycle.cpu import CgroupMounts, ContainerCpu, parse_mountinfo, usage_files
from ds01.model.inventory import Gpu, MachineSample
from support import TEST_IMAGE

CID = "c691a5174af21cf32bf060bb003068c5454edc0cb4068c9c35a52d9ff8da70c9"

# /proc/self/mountinfo lines of a hybrid host (this CI machine) and of a cgroup-v2-only host.
HYBRID = f"""\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
34 30 0:30 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 30 0:31 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
1200 1100 0:80 /docker/{CID} /mnt/weird rw - cgroup cgroup rw,cpuacct
"""
V2_ONLY = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 \
cgroup2 rw,nsdelegate,memory_recursiveprot\n"
V1_COMBINED = "33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:13 - cgroup cgroup \
rw,cpu,cpuacct\n"

# /proc/PID/cgroup of a container's first process.
CGROUPFS_V1 = f"""\
2:cpuacct:/docker/{CID}
1:cpu:/docker/{CID}
0::/docker/{CID}
"""
SYSTEMD_V2 = f"0::/system.slice/docker-{CID}.scope\n"
SYSTEMD_V1 = f"3:cpu,cpuacct:/ds01-alice.slice/docker-{CID}.scope\n1:name=systemd:/x\n"


def test_the_cgroup_mounts_come_from_mountinfo_for_hybrid_v2_only_and_v1_hosts() -> None:
    assert parse_mountinfo(HYBRID) == CgroupMounts(
        Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/cpuacct")
    )
    assert parse_mountinfo(V2_ONLY) == CgroupMounts(Path("/sys/fs/cgroup"), None)
    assert parse_mountinfo(V1_COMBINED) == CgroupMounts(None, Path("/sys/fs/cgroup/cpu,cpuacct"))
    assert parse_mountinfo("") == CgroupMounts(None, None)


@pytest.mark.parametrize(
    ("cgroup", "mounts", "want"),
    [
        pytest.param(
            CGROUPFS_V1,
            parse_mountinfo(HYBRID),
            [
                f"/sys/fs/cgroup/unified/docker/{CID}/cpu.stat",
                f"/sys/fs/cgroup/cpuacct/docker/{CID}/cpuacct.usage",
            ],
            id="cgroupfs driver on a hybrid host: v2's cpu.stat first, v1's cpuacct after",
        ),
        pytest.param(
            SYSTEMD_V2,
            parse_mountinfo(V2_ONLY),
            [f"/sys/fs/cgroup/system.slice/docker-{CID}.scope/cpu.stat"],
            id="systemd driver on a cgroup v2 host",
        ),
        pytest.param(
            SYSTEMD_V1,
            parse_mountinfo(V1_COMBINED),
            [f"/sys/fs/cgroup/cpu,cpuacct/ds01-alice.slice/docker-{CID}.scope/cpuacct.usage"],
            id="systemd driver under ds01's user slice on a cgroup v1 host",
        ),
        pytest.param(SYSTEMD_V2, CgroupMounts(None, None), [], id="nothing mounted: no file"),
    ],
)
def test_the_usage_file_is_found_for_each_driver_and_cgroup_version(
    cgroup: str, mounts: CgroupMounts, want: list[str]
) -> None:
    assert [str(p) for p in usage_files(cgroup, mounts)] == want


class _Tree:
    """A /proc and cgroup v2 tree in a temporary directory: the container's PID, its cgroup
    file and its cpu.stat, changed by the test like the kernel would."""

    def __init__(self, root: Path, pid: int | None) -> None:
        self.proc, self.v2 = root / "proc", root / "cgroup"
        self.pid = pid
        self.asked = 0
        self.now = 100.0
        if pid is not None:
            (self.proc / str(pid)).mkdir(parents=True)
            (self.proc / str(pid) / "cgroup").write_text(SYSTEMD_V2)
        self.stat = self.v2 / f"system.slice/docker-{CID}.scope/cpu.stat"

    def used(self, usec: int) -> None:
        self.stat.parent.mkdir(parents=True, exist_ok=True)
        self.stat.write_text(f"usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n")

    def pid_of(self, cid: str) -> int | None:
        assert cid == CID
        self.asked += 1
        return self.pid

    def reader(self) -> ContainerCpu:
        return ContainerCpu(self.pid_of, self.proc, CgroupMounts(self.v2, None), lambda: self.now)


def test_percent_of_one_core_between_reads_unknown_first_and_after_a_restart(
    tmp_path: Path,
) -> None:
    t = _Tree(tmp_path, 4242)
    t.used(5_000_000)
    cpu = t.reader()
    assert cpu.read([CID]) == {CID: None}  # nothing to measure from yet
    t.now, _ = 110.0, t.used(20_000_000)  # 15 s of CPU in 10 s: one and a half cores
    assert cpu.read([CID]) == {CID: 150.0}
    t.now, _ = 120.0, t.used(20_100_000)
    assert cpu.read([CID]) == {CID: 1.0}
    t.now, _ = 130.0, t.used(300_000)  # a new counter: the container was restarted
    assert cpu.read([CID]) == {CID: None}
    t.now, _ = 140.0, t.used(300_000)
    assert cpu.read([CID]) == {CID: 0.0}
    assert t.asked == 1  # the engine was asked once; every later read was the file alone


def test_a_stopped_container_a_reused_pid_and_a_missing_file_read_as_unknown(
    tmp_path: Path,
) -> None:
    stopped = _Tree(tmp_path / "a", None)
    assert stopped.reader().read([CID]) == {CID: None}

    reused = _Tree(tmp_path / "b", 77)
    reused.used(1_000_000)
    (reused.proc / "77" / "cgroup").write_text("0::/user.slice/user-1000.slice/session-3.scope\n")
    cpu = reused.reader()
    cpu.read([CID])
    reused.now += 10
    assert cpu.read([CID]) == {CID: None}  # never a host process's cgroup as the container's

    no_file = _Tree(tmp_path / "c", 78)  # the cgroup names the container, no cpu.stat in it
    cpu = no_file.reader()
    cpu.read([CID])
    no_file.now += 10
    assert cpu.read([CID]) == {CID: None}


@pytest.mark.parametrize(
    ("cpu_pct", "idle_cpu_pct", "want"),
    [
        pytest.param(97.0, 5.0, True, id="a busy container is in use whatever its GPU shows"),
        pytest.param(5.0, 5.0, True, id="at the threshold is in use, like a GPU's utilization"),
        pytest.param(1.0, 5.0, False, id="below the threshold the GPU decides"),
        pytest.param(None, 5.0, False, id="an unknown CPU reading leaves the GPU to decide"),
        pytest.param(97.0, 0.0, False, id="idle_cpu_pct 0 turns the CPU signal off"),
    ],
)
def test_an_idle_gpu_allocation_is_active_while_its_container_uses_the_cpu(
    cpu_pct: float | None, idle_cpu_pct: float, want: bool
) -> None:
    gpu = Gpu(0, "GPU-a", "NVIDIA A100", 40960, False, (), utilization_pct=0.0)
    by_unit = unit_activity(MachineSample(gpus=(gpu,)), 5.0)
    verdict = allocation_activity(["GPU-a"], by_unit, container_activity(cpu_pct, idle_cpu_pct))
    assert verdict.active is want


def test_the_verdict_names_the_cpu_signal() -> None:
    seen = container_activity(97.4, 5.0)
    assert seen is not None and (seen.signal, seen.detail) == (Signal.CPU, "97% >= 5%")
    gpu = Gpu(0, "GPU-a", "NVIDIA A100", 40960, False, (), utilization_pct=0.0)
    by_unit = unit_activity(MachineSample(gpus=(gpu,)), 5.0)
    assert allocation_activity(["GPU-a"], by_unit, seen).signal == (
        "utilization: 0% < 5%, cpu: 97% >= 5%"
    )


@pytest.mark.docker
def test_a_busy_container_reads_busy_and_a_sleeping_one_idle_on_the_real_engine(
    docker_client: docker.DockerClient,
) -> None:
    """Real containers, the real /proc and cgroup files of this host (whatever its driver and
    cgroup version), the engine's own State.Pid."""
    busy = docker_client.containers.run(
        TEST_IMAGE, ["sh", "-c", "while :; do :; done"], detach=True, nano_cpus=10**9
    )
    asleep = docker_client.containers.run(TEST_IMAGE, ["sleep", "600"], detach=True)
    try:

        def pid_of(cid: str) -> int | None:
            pid = docker_client.api.inspect_container(cid)["State"]["Pid"]
            return int(pid) or None

        cpu = ContainerCpu(pid_of)
        ids = [str(busy.id), str(asleep.id)]
        assert cpu.read(ids) == {i: None for i in ids}
        time.sleep(2)  # CPU time to measure, not a timing assertion
        got = cpu.read(ids)
        assert got[str(busy.id)] is not None and got[str(busy.id)] >= 5.0, got
        assert got[str(asleep.id)] is not None and got[str(asleep.id)] < 5.0, got
    finally:
        busy.remove(force=True)
        asleep.remove(force=True)
