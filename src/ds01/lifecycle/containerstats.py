"""The running ds01 containers' CPU and memory, sampled by ds01d for `ds01 container stats`
(issue 18, item 4): read from the kernel's cgroup files once per sample interval and kept in
memory, so that a request reads what ds01d already has — never Docker's stats endpoint (it
waits for two of the engine's own samples, about two seconds a call) and no subprocess.

Per container and pass, a few small file reads: CPU time (lifecycle/cpu.py's files: cgroup
v2 `cpu.stat`, v1 `cpuacct.usage`) and memory. CPU % is the CPU time used between two passes
(at least MIN_WINDOW_S apart) over the time between them, as percent of one core (200 % = two
cores busy: what `docker stats` shows). Memory is what `docker stats` calls usage, with
Docker's own formula (docker CLI's calculateMemUsageUnixNoCache): the cgroup's usage minus its
inactive file cache —

- cgroup v2 (the container's cgroup has the memory controller): `memory.current` minus
  `inactive_file` of `memory.stat`; the limit is `memory.max` ("max": none);
- cgroup v1 (the memory hierarchy; also a hybrid host, whose unified tree has no memory
  controller): `memory.usage_in_bytes` minus `total_inactive_file`; the limit is
  `memory.limit_in_bytes` (a page-rounded huge number: none).

The cgroup is found as lifecycle/cpu.py finds it: the engine's inspect gives the first
process's PID once per container (again only when its files are gone), /proc/PID/cgroup names
the cgroup, and only a cgroup that names that very container is read. The same inspect gives
the names `container stats` shows.

Unknown is None, never 0: CPU % on a container's first pass (nothing to measure from yet, also
after a ds01d restart) or after its counter went backwards, anything whose file cannot be read.
Must not: write a cgroup file, call the engine on every pass, or block a request (readers get
the last pass's frozen map).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ds01.errors import Ds01Error
from ds01.lifecycle.cpu import RETRY_S, CgroupMounts, parse_mountinfo, read_usage_us, usage_files
from ds01.runtime.spec import LABEL_NAME
from ds01.services.hostproc import container_id_from_cgroup

log = logging.getLogger("ds01d.lifecycle")

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything at
# least this large is no limit (2^62 bytes: no machine has that much memory).
V1_NO_LIMIT = 1 << 62
MIN_WINDOW_S = 0.5  # the shortest time between two CPU readings that gives a CPU %


@dataclass(frozen=True)
class ContainerReading:
    """One container as the last pass read it (epoch seconds; bytes)."""

    container_id: str
    name: str  # the short name `ds01 container list` shows (else the engine's name)
    docker_name: str
    taken_at: float
    cpu_pct: float | None  # percent of one core since the pass before; None: unknown
    cpu_limit: float | None  # cores it may use (its --cpus); None: no limit
    memory_used_bytes: int | None  # usage minus inactive file cache (docker stats' usage)
    memory_limit_bytes: int | None  # None: no limit


def memory_dirs(cgroup_text: str, mounts: CgroupMounts) -> list[tuple[Path, int]]:
    """(cgroup directory, cgroup version) that may hold the memory files of the cgroup that
    /proc/PID/cgroup names, best first: v2's unified tree, then v1's memory hierarchy."""
    v2: list[tuple[Path, int]] = []
    v1: list[tuple[Path, int]] = []
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        rel = path.lstrip("/")
        if hier == "0" and controllers == "" and mounts.v2 is not None:
            v2.append((mounts.v2 / rel, 2))
        elif "memory" in controllers.split(",") and mounts.memory is not None:
            v1.append((mounts.memory / rel, 1))
    return v2 + v1


def _stat(text: str, key: str) -> int | None:
    for line in text.splitlines():
        k, _, value = line.partition(" ")
        if k == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def read_memory(directory: Path, version: int) -> tuple[int, int | None] | None:
    """(used bytes, limit bytes or None for no limit) with Docker's formula (module
    docstring), or None when the directory has no memory files (v2 without the memory
    controller, or the cgroup is gone)."""
    if version == 2:
        current, limit, stat_key = "memory.current", "memory.max", "inactive_file"
    else:
        current, limit, stat_key = (
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "total_inactive_file",
        )
    try:
        usage = int((directory / current).read_text().strip())
        limit_text = (directory / limit).read_text().strip()
        stat = (directory / "memory.stat").read_text()
    except (OSError, ValueError):
        return None
    inactive = _stat(stat, stat_key)
    used = usage - inactive if inactive is not None and inactive < usage else usage
    if limit_text == "max":
        return used, None
    try:
        most = int(limit_text)
    except ValueError:
        return used, None
    return used, None if most >= V1_NO_LIMIT else most


@dataclass
class _Found:
    name: str
    docker_name: str
    cpu: Path | None  # the CPU time file
    memory: tuple[Path, int] | None  # the memory directory and its cgroup version
    cpu_limit: float | None
    usage_us: int | None = None
    at: float = 0.0  # monotonic clock of usage_us
    cpu_pct: float | None = None  # of the last window long enough to tell


class ContainerStats:
    """The running containers' latest readings; observe() is one pass."""

    def __init__(
        self,
        inspect: Callable[[str], Mapping[str, Any]],
        proc_root: Path = Path("/proc"),
        mounts: CgroupMounts | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._inspect = inspect  # the engine's inspect of a container (its raw answer)
        self._proc = proc_root
        self._mounts = mounts
        self._clock = clock
        self._wall = wall
        self._found: dict[str, _Found] = {}
        self._retry_at: dict[str, float] = {}
        self._latest: Mapping[str, ContainerReading] = MappingProxyType({})

    def latest(self) -> Mapping[str, ContainerReading]:
        """container ID → its reading of the last pass (read-only; replaced, never changed)."""
        return self._latest

    def mounts(self) -> CgroupMounts:
        if self._mounts is None:
            try:
                text = (self._proc / "self/mountinfo").read_text()
            except OSError:
                text = ""
            self._mounts = parse_mountinfo(text)
        return self._mounts

    def observe(self, container_ids: Iterable[str]) -> None:
        """Read every container in `container_ids` (the running ones); forget the others."""
        wanted = set(container_ids)
        for gone in self._found.keys() - wanted:
            del self._found[gone]
        for gone in self._retry_at.keys() - wanted:
            del self._retry_at[gone]
        out: dict[str, ContainerReading] = {}
        for cid in sorted(wanted):
            reading = self._one(cid)
            if reading is not None:
                out[cid] = reading
        self._latest = MappingProxyType(out)

    def _one(self, cid: str) -> ContainerReading | None:
        now = self._clock()
        found = self._found.get(cid)
        usage = read_usage_us(found.cpu) if found is not None and found.cpu is not None else None
        memory = read_memory(*found.memory) if found is not None and found.memory else None
        if found is None or (usage is None and memory is None):
            found = self._locate(cid, now)  # new, or its files are gone (it restarted)
            if found is None:
                self._found.pop(cid, None)
                return None
            self._found[cid] = found
            usage = read_usage_us(found.cpu) if found.cpu is not None else None
            memory = read_memory(*found.memory) if found.memory else None
        elapsed = now - found.at
        if usage is None or found.usage_us is None or usage < found.usage_us:
            found.usage_us, found.at, found.cpu_pct = usage, now, None  # nothing to measure from
        elif elapsed >= MIN_WINDOW_S:
            found.cpu_pct = round(100.0 * (usage - found.usage_us) / (elapsed * 1e6), 1)
            found.usage_us, found.at = usage, now
        # else: a pass right after the last (woken by a sample just after its own timeout):
        # too short a window to tell a busy loop from a descheduled one; the last one stands.
        cpu_pct = found.cpu_pct
        return ContainerReading(
            container_id=cid,
            name=found.name,
            docker_name=found.docker_name,
            taken_at=self._wall(),
            cpu_pct=cpu_pct,
            cpu_limit=found.cpu_limit,
            memory_used_bytes=None if memory is None else memory[0],
            memory_limit_bytes=None if memory is None else memory[1],
        )

    def _locate(self, cid: str, now: float) -> _Found | None:
        if now < self._retry_at.get(cid, 0.0):
            return None
        try:
            data = self._inspect(cid)
        except Ds01Error as err:
            self._retry_at[cid] = now + RETRY_S
            log.warning("container %s: no stats reading (%s)", cid[:12], err.what)
            return None
        pid = (data.get("State") or {}).get("Pid")
        if not isinstance(pid, int) or pid <= 0:
            return None  # not running
        try:
            text = (self._proc / str(pid) / "cgroup").read_text()
        except OSError:
            return None  # exited since
        if container_id_from_cgroup(text) != cid:
            return None  # the PID is no longer the container's
        mounts = self.mounts()
        cpu = next((p for p in usage_files(text, mounts) if read_usage_us(p) is not None), None)
        memory = next((d for d in memory_dirs(text, mounts) if read_memory(*d) is not None), None)
        docker_name = str(data.get("Name") or cid[:12]).lstrip("/")
        labels = (data.get("Config") or {}).get("Labels") or {}
        return _Found(
            name=str(labels.get(LABEL_NAME) or docker_name),
            docker_name=docker_name,
            cpu=cpu,
            memory=memory,
            cpu_limit=_cpu_limit(data),
        )


def _cpu_limit(data: Mapping[str, Any]) -> float | None:
    """--cpus as the engine stored it (HostConfig.NanoCpus; ds01 sets its limits so)."""
    nano = (data.get("HostConfig") or {}).get("NanoCpus")
    return round(nano / 1e9, 3) if isinstance(nano, int) and nano > 0 else None
