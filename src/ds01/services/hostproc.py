"""The host GPU process watch (issue 3): who is computing on the GPUs outside ds01 containers.

Owns mapping each GPU compute process of the daemon's latest MachineSample (NVML host PIDs;
never an NVML call of its own) to its container — from /proc/PID/cgroup — or to its host user
— from /proc/PID/status — and deciding what that means:

    in a container with a live ds01 allocation   fine, and never signalled
    in a container without one                   listed (the reconciler owns containers)
    root's                                        system: fine
    an exempt user's, or a user with a live grant fine
    anyone else's                                 a violation: one event, a message to the
                                                  user, listed for admins; with
                                                  host.host_process_policy: terminate also
                                                  SIGTERM, then SIGKILL after grant_kill_grace

When a user's grant ends (expired or revoked), their host GPU processes are handled by
host.grant_expiry instead: warn (reported) or terminate.

Signals go only to host processes: never to a process in any container (so never to one of a
live allocation), never to pid 1, the daemon itself or a root process, and only through a pidfd
after re-checking the process's start time, so a reused pid is never hit. Processes that no
longer exist are dropped. Every step is an audit event; a process is reported once per boot
(recorded in the database, so a restart does not report it again).
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from ds01.config import Config
from ds01.model.inventory import GpuProcess, MachineSample
from ds01.notify import Notifier
from ds01.services.allocation import AllocationService
from ds01.services.grants import GrantService
from ds01.store import events
from ds01.store import grants as store
from ds01.store.allocations import AllocationRow
from ds01.store.db import Database
from ds01.store.grants import GrantRow
from ds01.units import format_duration

log = logging.getLogger("ds01d.hostproc")

DAEMON = "ds01d"

# One cgroup path component that names a Docker container:
#   /docker/<id>                       cgroupfs driver, default parent
#   /system.slice/docker-<id>.scope    systemd driver, default parent
#   /ds01-<user>.slice/docker-<id>.scope   systemd driver, ds01's per-user slice
#   /ds01/<user>/<id>                  cgroupfs driver, ds01's per-user parent
_CONTAINER_COMPONENT = re.compile(r"(?:docker-)?([0-9a-f]{64})(?:\.scope)?")


def container_id_from_cgroup(text: str) -> str | None:
    """The Docker container a process runs in, from /proc/PID/cgroup (v1 or v2), or None for a
    host process. The outermost container wins: a container nested in a ds01 container is
    still the ds01 container's."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for component in parts[2].split("/"):
            m = _CONTAINER_COMPONENT.fullmatch(component)
            if m:
                return m.group(1)
    return None


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    started: int  # /proc/PID/stat field 22: start time in clock ticks since boot
    uid: int  # real uid
    container_id: str | None
    comm: str


def parse_stat(text: str) -> tuple[str, str, int]:
    """(comm, state, starttime) from /proc/PID/stat; comm may hold spaces and parentheses."""
    comm = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return comm, rest[0], int(rest[19])


def parse_real_uid(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ValueError("no Uid line")


class ProcReader:
    """Reads /proc (another root for tests). A process that is gone or a zombie reads as None."""

    def __init__(self, root: Path = Path("/proc")) -> None:
        self.root = root

    def info(self, pid: int) -> ProcInfo | None:
        base = self.root / str(pid)
        try:
            comm, state, started = parse_stat((base / "stat").read_text())
            if state in ("Z", "X", "x"):
                return None  # exited; only its parent has yet to collect it
            uid = parse_real_uid((base / "status").read_text())
            cgroup = (base / "cgroup").read_text()
        except (OSError, ValueError, IndexError):
            return None
        return ProcInfo(pid, started, uid, container_id_from_cgroup(cgroup), comm)

    def boot_id(self) -> str:
        try:
            return (self.root / "sys/kernel/random/boot_id").read_text().strip() or "unknown"
        except OSError:
            return "unknown"


class ProcStatus(StrEnum):
    CONTAINER = "container"  # in a ds01 container with a live allocation
    CONTAINER_UNALLOCATED = "container_unallocated"  # in a container, no live allocation
    SYSTEM = "system"  # root's
    EXEMPT = "exempt"
    GRANTED = "granted"
    VIOLATION = "violation"


@dataclass
class HostProcess:
    """One GPU compute process as the watch sees it (a copy is what the API lists)."""

    pid: int
    started: int
    uid: int
    user: str | None  # None: NSS does not know the uid
    name: str
    status: ProcStatus
    first_seen: float
    gpu_uuids: tuple[str, ...] = ()
    gpu_indices: tuple[int, ...] = ()
    unit_uuids: tuple[str, ...] = ()
    used_memory_mib: int | None = None
    container_id: str | None = None
    allocation_id: int | None = None
    allocation_user: str | None = None
    cause: str | None = None  # no_grant | grant_ended, once it is a violation
    policy: str | None = None  # report | terminate: what the watch does about it
    action: str | None = None  # sigterm_sent | sigkill_sent
    signalled_at: float | None = None
    kill_at: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.started)

    def details(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "started": self.started,
            "uid": self.uid,
            "name": self.name,
            "gpus": list(self.gpu_uuids),
            "units": list(self.unit_uuids),
            "cause": self.cause,
            "policy": self.policy,
        }


def _user_of(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class HostProcessWatch:
    def __init__(
        self,
        db: Database,
        allocations: AllocationService,
        grants: GrantService,
        notifier: Notifier,
        *,
        reader: ProcReader | None = None,
        clock: Callable[[], float] = time.time,
        own_pid: int | None = None,
        user_of: Callable[[int], str | None] = _user_of,
    ) -> None:
        self.db = db
        self.allocations = allocations
        self.grants = grants
        self.notifier = notifier
        self.reader = reader or ProcReader()
        self._clock = clock
        self._own_pid = os.getpid() if own_pid is None else own_pid
        self._user_of = user_of
        self._lock = threading.Lock()
        self._pending_ended: set[str] = set()
        self._tracked: dict[tuple[int, int], HostProcess] = {}
        self._view: tuple[HostProcess, ...] = ()
        self._boot_id: str | None = None

    @property
    def config(self) -> Config:
        return self.allocations.config

    def grant_ended(self, row: GrantRow, why: str) -> None:
        """GrantService.on_ended: handle the user's host processes in the next scan."""
        with self._lock:
            self._pending_ended.add(row.user)

    def current(self) -> tuple[HostProcess, ...]:
        """The last scan's GPU processes as kept: the same tuple until the next scan (what
        services/unituse.py's memo compares by identity). Read only."""
        return self._view

    def processes(self) -> list[HostProcess]:
        """The GPU processes of the last scan, violations first (copies; no /proc reads)."""
        order = {ProcStatus.VIOLATION: 0, ProcStatus.CONTAINER_UNALLOCATED: 1}
        return sorted(self._view, key=lambda p: (order.get(p.status, 2), p.pid))

    # ---- the pass --------------------------------------------------------------------

    def scan(self, sample: MachineSample | None) -> None:
        """Classify the sample's processes and act: report, signal, escalate, forget."""
        with self._lock:
            ended_users = self._pending_ended
            self._pending_ended = set()
        if self._boot_id is None:
            self._boot_id = self.reader.boot_id()
            with self.db.transaction() as conn:
                store.forget_other_boots(conn, self._boot_id)
        now = self._clock()
        live_by_container = {
            a.container_id: a for a in self.allocations.all_live() if a.container_id
        }
        gpu_index = {g.uuid: g.index for g in sample.gpus} if sample else {}
        by_pid: dict[int, list[GpuProcess]] = {}
        for p in sample.processes if sample else ():
            by_pid.setdefault(p.pid, []).append(p)

        current: dict[tuple[int, int], HostProcess] = {}
        for pid, entries in sorted(by_pid.items()):
            info = self.reader.info(pid)
            if info is None:
                continue  # gone: dropped
            t = self._tracked.get((pid, info.started)) or HostProcess(
                pid=pid,
                started=info.started,
                uid=info.uid,
                user=self._user_of(info.uid),
                name=entries[0].name or info.comm,
                status=ProcStatus.SYSTEM,
                first_seen=now,
                container_id=info.container_id,
            )
            gpus = tuple(dict.fromkeys(e.gpu_uuid for e in entries))
            t.gpu_uuids = gpus
            t.gpu_indices = tuple(gpu_index[g] for g in gpus if g in gpu_index)
            t.unit_uuids = tuple(dict.fromkeys(e.unit_uuid or e.gpu_uuid for e in entries))
            mems = [e.used_memory_mib for e in entries]
            t.used_memory_mib = None if None in mems else sum(m for m in mems if m is not None)
            self._classify(t, live_by_container)
            current[t.key] = t
        # A process we signalled stays watched until it is gone, listed or not.
        for key, t in self._tracked.items():
            if key not in current and t.signalled_at is not None:
                info = self.reader.info(t.pid)
                if info is not None and info.started == t.started:
                    current[key] = t
        for key, t in self._tracked.items():
            if key not in current and t.signalled_at is not None:
                self._event(t, "process_exited", f"process {t.pid} ({t.name}) has exited", now)
        self._tracked = current

        for user in sorted(ended_users):
            self._after_grant(user, now)
        for t in list(current.values()):
            if t.status is ProcStatus.VIOLATION and t.cause is None:
                self._report(t, now)
            if t.status is not ProcStatus.VIOLATION:
                t.cause = t.policy = None
                t.kill_at = None  # access came back (a grant): no escalation
                continue
            if t.policy == "terminate" and t.action is None:
                self._terminate(t, now)
            elif t.kill_at is not None and now >= t.kill_at:
                self._kill(t, now)
        self._view = tuple(replace(t) for t in current.values())

    def clock_stepped(self, step_s: float) -> None:
        """ClockWatch.on_step: a pending SIGKILL keeps the grace it had left (called from the
        host-access pass, the thread that scans)."""
        for t in self._tracked.values():
            t.first_seen += step_s
            if t.signalled_at is not None:
                t.signalled_at += step_s
            if t.kill_at is not None:
                t.kill_at += step_s

    def _classify(self, t: HostProcess, live_by_container: dict[str, AllocationRow]) -> None:
        if t.container_id is not None:
            alloc = live_by_container.get(t.container_id)
            if alloc is not None:
                t.status = ProcStatus.CONTAINER
                t.allocation_id = alloc.id
                t.allocation_user = alloc.user
            else:
                t.status = ProcStatus.CONTAINER_UNALLOCATED
                t.allocation_id = t.allocation_user = None
            return
        if t.uid == 0:
            t.status = ProcStatus.SYSTEM
        elif t.user is not None and self.config.is_exempt(t.user):
            t.status = ProcStatus.EXEMPT
        elif t.user is not None and self.grants.has_host_access(t.user):
            t.status = ProcStatus.GRANTED
        else:
            t.status = ProcStatus.VIOLATION

    # ---- reports ---------------------------------------------------------------------

    def _where(self, t: HostProcess) -> str:
        if t.gpu_indices:
            return ", ".join(f"GPU {i}" for i in t.gpu_indices)
        return ", ".join(t.gpu_uuids) or "a GPU"

    def _stopping_text(self) -> str:
        grace = format_duration(self.config.host.grant_kill_grace)
        return f"It is being stopped now (SIGTERM, then SIGKILL after {grace})."

    def _report(self, t: HostProcess, now: float) -> None:
        """A violation seen for the first time: event (once per boot) and a message."""
        t.cause = "no_grant"
        t.policy = self.config.host.host_process_policy
        assert self._boot_id is not None
        with self.db.transaction() as conn:
            new = store.mark_reported(
                conn,
                boot_id=self._boot_id,
                pid=t.pid,
                started=t.started,
                uid=t.uid,
                user=t.user,
                cause=t.cause,
                now=now,
            )
            if not new:
                return  # reported before a restart
            events.record(
                conn,
                kind="host",
                action="process_violation",
                reason="no_host_access",
                actor=DAEMON,
                user=t.user,
                message=f"process {t.pid} ({t.name}) of {t.user or f'uid {t.uid}'} computes on"
                f" {self._where(t)} on the host without an exemption or a grant",
                details=t.details(),
                ts=now,
            )
        if t.user is not None:
            self.notifier.notify(
                t.user,
                "host_process",
                f"Your process {t.pid} ({t.name}) is computing on {self._where(t)} directly on "
                "the host, but you have no bare-metal GPU access (no exemption, no grant). "
                "This was reported to the lab admins."
                + (" " + self._stopping_text() if t.policy == "terminate" else "")
                + "\n"
                + self.grants.how_for(t.user)
                + " If you need the host itself, ask an admin for a grant.",
            )

    def _after_grant(self, user: str, now: float) -> None:
        """The user's grant ended: their host GPU processes go by host.grant_expiry."""
        if self.grants.has_host_access(user):
            return  # exempt, or granted again meanwhile
        mine = [
            t
            for t in self._tracked.values()
            if t.user == user and t.status is ProcStatus.VIOLATION and t.action is None
        ]
        if not mine:
            return
        terminate = self.config.host.grant_expiry == "terminate"
        assert self._boot_id is not None
        with self.db.transaction() as conn:
            for t in mine:
                t.cause = "grant_ended"
                t.policy = "terminate" if terminate else "report"
                store.mark_reported(
                    conn,
                    boot_id=self._boot_id,
                    pid=t.pid,
                    started=t.started,
                    uid=t.uid,
                    user=t.user,
                    cause=t.cause,
                    now=now,
                )
                events.record(
                    conn,
                    kind="host",
                    action="process_after_grant",
                    reason="grant_ended",
                    actor=DAEMON,
                    user=user,
                    message=f"process {t.pid} ({t.name}) still computes on {self._where(t)}"
                    " after the grant ended"
                    + ("; terminating" if terminate else "; reported (grant_expiry: warn)"),
                    details=t.details(),
                    ts=now,
                )
        listing = ", ".join(f"{t.pid} ({t.name})" for t in mine)
        self.notifier.notify(
            user,
            "host_process",
            f"Your bare-metal GPU access has ended, and these processes still compute on GPUs "
            f"on the host: {listing}. "
            + (
                self._stopping_text()
                if terminate
                else "They were reported to the lab admins; please end them."
            )
            + "\n"
            + self.grants.how_for(user),
        )

    # ---- signals ---------------------------------------------------------------------

    def _may_signal(self, t: HostProcess) -> str | None:
        """Why this process must not be signalled, or None when it may."""
        if t.pid <= 1 or t.pid == self._own_pid:
            return "pid 1 and ds01d itself are never signalled"
        if t.uid == 0:
            return "root's processes are never signalled"
        info = self.reader.info(t.pid)
        if info is None or info.started != t.started:
            return "gone"
        if info.container_id is not None:
            return "it runs in a container"
        if info.uid != t.uid:
            return "its owner changed"
        return None

    def _send(self, t: HostProcess, sig: signal.Signals) -> str | None:
        """Signal through a pidfd opened after the checks and re-checked, so a pid reused in
        between is never hit. Returns why it was not sent, or None."""
        why = self._may_signal(t)
        if why is not None:
            return why
        try:
            fd = os.pidfd_open(t.pid)
        except ProcessLookupError:
            return "gone"
        except OSError:
            fd = -1  # no pidfd support: the checks above are all we have
        try:
            info = self.reader.info(t.pid)
            if info is None or info.started != t.started or info.container_id is not None:
                return "gone"
            if fd >= 0:
                signal.pidfd_send_signal(fd, sig)
            else:
                os.kill(t.pid, sig)
        except ProcessLookupError:
            return "gone"
        except OSError as e:
            return f"{sig.name} failed: {e.strerror or e}"
        finally:
            if fd >= 0:
                os.close(fd)
        return None

    def _terminate(self, t: HostProcess, now: float) -> None:
        why = self._send(t, signal.SIGTERM)
        if why == "gone":
            return
        t.action = "sigterm_sent" if why is None else "refused"
        if why is not None:
            self._event(t, "process_signal_refused", f"not signalling {t.pid}: {why}", now)
            return
        grace = self.config.host.grant_kill_grace
        t.signalled_at = now
        t.kill_at = now + grace
        self._event(
            t,
            "process_sigterm",
            f"SIGTERM to process {t.pid} ({t.name}) of {t.user or t.uid}; SIGKILL in"
            f" {format_duration(grace)} if it is still running",
            now,
        )

    def _kill(self, t: HostProcess, now: float) -> None:
        t.kill_at = None
        why = self._send(t, signal.SIGKILL)
        if why == "gone":
            return
        if why is not None:
            self._event(t, "process_signal_refused", f"not killing {t.pid}: {why}", now)
            return
        t.action = "sigkill_sent"
        self._event(
            t, "process_sigkill", f"SIGKILL to process {t.pid} ({t.name}): it outlived SIGTERM", now
        )

    def _event(self, t: HostProcess, action: str, message: str, now: float) -> None:
        with self.db.transaction() as conn:
            events.record(
                conn,
                kind="host",
                action=action,
                reason=t.cause or "host_process",
                actor=DAEMON,
                user=t.user,
                message=message,
                details=t.details(),
                ts=now,
            )
