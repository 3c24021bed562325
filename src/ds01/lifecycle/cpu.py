"""A container's CPU use, for the idle decision (issue 15, items 1-2): the CPU time its cgroup
has used, read from the kernel's cgroup files once per lifecycle pass, as percent of one core
since the previous pass (200 % = two cores busy).

Finding the cgroup: once per container (again only when its file is gone), the engine's inspect
gives the host PID of its first process, and /proc/PID/cgroup names the cgroup — the same for
Docker's systemd driver (`…/docker-ID.scope`) and its cgroupfs driver (`…/docker/ID`, or
`/ds01/USER/ID` under ds01's cgroup parent), whatever the parent. The path is used only when it
names that very container (services.hostproc.container_id_from_cgroup), so a PID reused by a
host process is never read as the container's. The file read, by what the host mounts (read
once from /proc/self/mountinfo):

- cgroup v2, also the unified part of a hybrid host: `cpu.stat`, its `usage_usec` line;
- cgroup v1 only: the cpuacct hierarchy's `cpuacct.usage` (nanoseconds).

A pass costs one small file read per running GPU container; the engine is asked only for a
container not seen before (or whose file went away: it was stopped), and, after an engine
failure, not again for that container before RETRY_S.

Unknown is None, never 0 %: the first pass that sees a container (there is no earlier reading
to measure from, also after a ds01d restart), a container whose cgroup file cannot be found or
read (neither cgroup hierarchy mounted, a host without CPU accounting, the engine down), or a
counter that went backwards (the container restarted). What the idle decision does then is
lifecycle/activity.py's. Must not: write a cgroup file, signal a process, call the engine on
every pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ds01.errors import Ds01Error
from ds01.services.hostproc import container_id_from_cgroup

log = logging.getLogger("ds01d.lifecycle")

RETRY_S = 60.0  # after the engine failed to name a container's PID


@dataclass(frozen=True)
class CgroupMounts:
    """Where the host mounts the cgroup hierarchies ds01 reads (None: not mounted)."""

    v2: Path | None  # the cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid)
    cpuacct: Path | None  # the cgroup v1 hierarchy with the cpuacct controller
    memory: Path | None = None  # the cgroup v1 hierarchy with the memory controller


def parse_mountinfo(text: str) -> CgroupMounts:
    """The cgroup mounts from /proc/self/mountinfo (proc(5): mount point is field 5; after the
    ' - ' separator come the filesystem type, the source and the super options)."""
    v2: Path | None = None
    cpuacct: Path | None = None
    memory: Path | None = None
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        point = Path(fields[4].replace("\\040", " "))
        if after[0] == "cgroup2" and v2 is None:
            v2 = point
        elif after[0] == "cgroup" and "cpuacct" in after[2].split(",") and cpuacct is None:
            cpuacct = point
        elif after[0] == "cgroup" and "memory" in after[2].split(",") and memory is None:
            memory = point
    return CgroupMounts(v2, cpuacct, memory)


def usage_files(cgroup_text: str, mounts: CgroupMounts) -> list[Path]:
    """The files that may hold the CPU time of the cgroup that /proc/PID/cgroup names, best
    first: cgroup v2's cpu.stat, then v1's cpuacct.usage."""
    out: list[Path] = []
    v1: list[Path] = []
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        rel = path.lstrip("/")
        if hier == "0" and controllers == "" and mounts.v2 is not None:
            out.append(mounts.v2 / rel / "cpu.stat")
        elif "cpuacct" in controllers.split(",") and mounts.cpuacct is not None:
            v1.append(mounts.cpuacct / rel / "cpuacct.usage")
    return out + v1


def read_usage_us(path: Path) -> int | None:
    """CPU microseconds used by the cgroup, from its cpu.stat (usage_usec) or cpuacct.usage (ns);
    None when the file is gone or says nothing usable."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        if path.name == "cpu.stat":
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value)
            return None
        return int(text.strip()) // 1000
    except ValueError:
        return None


@dataclass
class _Seen:
    path: Path
    usage_us: int
    at: float  # monotonic clock


class ContainerCpu:
    """Percent of one core each container used since the previous read()."""

    def __init__(
        self,
        pid_of: Callable[[str], int | None],
        proc_root: Path = Path("/proc"),
        mounts: CgroupMounts | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pid_of = pid_of  # the container's main PID on the host, None when not running
        self._proc = proc_root
        self._mounts = mounts
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._retry_at: dict[str, float] = {}
        self._missing_logged = False

    def mounts(self) -> CgroupMounts:
        if self._mounts is None:
            try:
                text = (self._proc / "self/mountinfo").read_text()
            except OSError:
                text = ""
            self._mounts = parse_mountinfo(text)
        return self._mounts

    def read(self, container_ids: Iterable[str]) -> dict[str, float | None]:
        """container ID → percent of one core since the previous read (None: unknown, see the
        module's docstring). Containers not asked about are forgotten."""
        wanted = set(container_ids)
        for gone in self._seen.keys() - wanted:
            del self._seen[gone]
        for gone in self._retry_at.keys() - wanted:
            del self._retry_at[gone]
        return {cid: self._one(cid) for cid in wanted}

    def _one(self, cid: str) -> float | None:
        seen = self._seen.get(cid)
        now = self._clock()
        usage = read_usage_us(seen.path) if seen is not None else None
        if seen is None or usage is None:
            path = self._locate(cid, now)
            if path is None:
                self._seen.pop(cid, None)
                return None
            usage = read_usage_us(path)
            if usage is None:
                self._seen.pop(cid, None)
                return None
            self._seen[cid] = _Seen(path, usage, now)
            return None  # a first reading: nothing to measure from yet
        elapsed, used = now - seen.at, usage - seen.usage_us
        seen.usage_us, seen.at = usage, now
        if elapsed <= 0 or used < 0:
            return None  # the same instant, or a new counter (the container restarted)
        return 100.0 * used / (elapsed * 1e6)

    def _locate(self, cid: str, now: float) -> Path | None:
        if now < self._retry_at.get(cid, 0.0):
            return None
        try:
            pid = self._pid_of(cid)
        except Ds01Error as err:
            self._retry_at[cid] = now + RETRY_S
            log.warning("container %s: no CPU reading (%s)", cid[:12], err.what)
            return None
        if not pid:
            return None  # not running
        try:
            text = (self._proc / str(pid) / "cgroup").read_text()
        except OSError:
            return None  # exited since
        if container_id_from_cgroup(text) != cid:
            return None  # the PID is no longer the container's
        for path in usage_files(text, self.mounts()):
            if read_usage_us(path) is not None:
                return path
        if not self._missing_logged:
            self._missing_logged = True
            log.warning(
                "no CPU accounting file for container %s (cgroup v2 at %s, v1 cpuacct at %s):"
                " containers' CPU use does not count for idleness on this host",
                cid[:12],
                self.mounts().v2,
                self.mounts().cpuacct,
            )
        return None
