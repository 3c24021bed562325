"""ds01d's device watch (issue 12): /dev/nvidia* keep the owner and mode the config asks for.

Why it exists. With `host.compute_gate: uvm` only the group ds01-gpu-host may open
/dev/nvidia-uvm*, which CUDA needs and nvidia-smi does not. Left to itself the NVIDIA stack does
not keep that: with the driver's default `ModifyDeviceFiles: 1`, the first CUDA start by any
root process (the NVIDIA container CLI at every GPU container start, DCGM, root's jobs) resets
the nodes to the driver's `DeviceFile*` modes (measured on an H200, docs/host-access.md). The
rendered module options set `NVreg_ModifyDeviceFiles=0`, which NVIDIA honors only in the GPU
and capability drivers: nvidia-modprobe creates and chmods the uvm nodes with its built-in
root:root 0666 whatever that option says (NVIDIA/nvidia-modprobe, `nvidia_uvm_mknod` passes no
parameter file; the NVIDIA container CLI calls it at each GPU container start), and any root
may chmod. So ds01d keeps the nodes:

- creates the nodes the loaded driver needs that are missing (with ModifyDeviceFiles=0 nothing
  else creates /dev/nvidiactl and /dev/nvidiaN; host/devnodes.py says which, from /proc);
- puts back the owner and mode of every /dev/nvidia* node (and /dev/nvidia-caps/*) that differ;
- looks every TICK_S (0.5 s: at every GPU sample and more often) and at once when inotify
  reports a change to a /dev/nvidia* entry, so drift is undone within a second;
- records each pass that changed something as one audit event per kind (kind `host`, action
  `devices_restored` or `devices_created`): every node's owner and mode before and after, what
  woke the pass, and the root processes holding a restored node open — the CUDA user that most
  likely caused the reset, when it still runs (a short-lived one, such as nvidia-modprobe or the
  container CLI, has usually exited by then: the list is then empty).

Active only when the config departs from the driver's defaults (devnodes.managed: device_access
group or compute_gate uvm); otherwise a pass does nothing. Changes only character devices under
its root (`/` in production; ds01d --host-root for tests), never deletes one. Processes are read
from the live /proc always. Not root on `/`: reports once and does nothing. A node it cannot
change is logged and audited once (`devices_failed`) and tried again every pass; the loop itself
stays healthy (the doctor's devices checks show the nodes as they are).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ds01.config import Config
from ds01.host import devnodes
from ds01.host.devnodes import NodeChange
from ds01.services.inotify import (
    IN_ATTRIB,
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Inotify,
)
from ds01.store import events
from ds01.store.db import Database

log = logging.getLogger("ds01d.devices")

DAEMON = "ds01d"
TICK_S = 0.5
WATCH_MASK = IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR
MAX_HOLDERS = 20


class DeviceWatch:
    def __init__(
        self,
        db: Database,
        config: Callable[[], Config],
        root: Path = Path("/"),
        *,
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.time,
        own_pid: int | None = None,
    ) -> None:
        self.db = db
        self._config = config
        self.root = root
        self._proc = proc
        self._clock = clock
        self._own_pid = os.getpid() if own_pid is None else own_pid
        self._lock = threading.Lock()  # one pass at a time (the loop, the start)
        self._watch_lock = threading.Lock()  # the inotify watches (event loop and pass threads)
        self._inotify: Inotify | None = None
        self._watched: dict[str, int] = {}  # watched directory (host path) → watch descriptor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = False
        self._reported: set[str] = set()  # failures and notes said once, until they clear
        self.wake = asyncio.Event()

    # ---- inotify ---------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """Watch <root>/dev (and /dev/nvidia-caps) for changes; returns the event that is set
        when a /dev/nvidia* entry changed (the devices loop waits on it between passes)."""
        self.wake = asyncio.Event()
        try:
            self._inotify = Inotify()
        except OSError as e:
            log.warning("inotify unavailable (%s): device nodes are checked every %ss", e, TICK_S)
            return self.wake
        self._watch_dirs()
        loop.add_reader(self._inotify.fileno(), self._on_readable)
        self._loop = loop
        return self.wake

    def _watch_dirs(self) -> None:
        with self._watch_lock:
            if self._inotify is None:
                return
            for host_dir in ("/dev", devnodes.CAPS_DIR):
                if host_dir in self._watched:
                    continue
                path = devnodes.at(self.root, host_dir)
                if not path.is_dir():
                    continue
                try:
                    self._watched[host_dir] = self._inotify.add(path, WATCH_MASK)
                except OSError as e:
                    log.warning("cannot watch %s with inotify: %s", path, e)

    def _on_readable(self) -> None:
        """Event loop callback: wake the devices loop when a /dev/nvidia* entry changed."""
        if self._inotify is None:
            return
        relevant = False
        for event in self._inotify.read():
            if event.mask & IN_IGNORED:
                with self._watch_lock:
                    self._watched = {d: w for d, w in self._watched.items() if w != event.wd}
            if event.mask & IN_Q_OVERFLOW or event.name.startswith("nvidia"):
                relevant = True
        if relevant:
            self._woken = True
            self.wake.set()

    def close(self) -> None:
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None

    # ---- the pass --------------------------------------------------------------------

    def enforce(self, trigger: str | None = None) -> list[NodeChange]:
        """One pass: create missing nodes, restore drifted ones, audit what changed. Returns the
        changes made."""
        if trigger is None:
            trigger = "inotify" if self._woken else "poll"
        self._woken = False
        config = self._config()
        with self._lock:
            if not devnodes.managed(config):
                self._reported.clear()
                return []
            if devnodes.at(self.root, "/").resolve() == Path("/") and os.geteuid() != 0:
                self._once(
                    "not-root",
                    "ds01d is not root: /dev/nvidia* owner and mode are not kept",
                    {"op": "all"},
                )
                return []
            self._watch_dirs()  # /dev/nvidia-caps appears when MIG is first used
            plan = devnodes.plan(config, self.root)
            outcome = devnodes.execute(plan.changes, self.root)
            current = {f"note:{n}" for n in plan.notes}
            for note in plan.notes:
                if f"note:{note}" not in self._reported:
                    log.warning("device nodes: %s", note)
            for problem in plan.problems:
                current.add(f"problem:{problem}")
                self._once(f"problem:{problem}", f"device nodes: {problem}", {"op": "check"})
            for change, why in outcome.failed:
                key = f"failed:{change.path}:{why}"
                current.add(key)
                self._once(
                    key,
                    f"cannot {', '.join(change.actions())}: {why}",
                    {"op": "change", **change.details(), "error": why},
                )
            self._reported = current
            self._record(outcome.done, trigger, plan.notes)
            return outcome.done

    def _record(self, done: list[NodeChange], trigger: str, notes: tuple[str, ...]) -> None:
        restored = [c for c in done if not c.created]
        created = [c for c in done if c.created]
        if not restored and not created:
            return
        holders = self.root_holders({c.path for c in restored}) if restored else []
        now = self._clock()
        with self.db.transaction() as conn:
            if restored:
                who = (
                    "root processes holding them open: "
                    + ", ".join(f"{h['pid']} ({h['comm']})" for h in holders)
                    if holders
                    else "no root process holds them open now"
                )
                events.record(
                    conn,
                    kind="host",
                    action="devices_restored",
                    reason="device_drift",
                    actor=DAEMON,
                    message="restored "
                    + ", ".join(
                        f"{c.path} ({c.old.text()} → {c.new_text()})" for c in restored if c.old
                    )
                    + f" [{trigger}]; {who}",
                    details={
                        "trigger": trigger,
                        "nodes": [c.details() for c in restored],
                        "root_processes": holders,
                        "notes": list(notes),
                    },
                    ts=now,
                )
            if created:
                events.record(
                    conn,
                    kind="host",
                    action="devices_created",
                    reason="device_missing",
                    actor=DAEMON,
                    message="created "
                    + ", ".join(
                        f"{c.path} (c {c.major}:{c.minor}, {c.new_text()})" for c in created
                    )
                    + f" [{trigger}]",
                    details={
                        "trigger": trigger,
                        "nodes": [c.details() for c in created],
                        "notes": list(notes),
                    },
                    ts=now,
                )
        for c in restored:
            log.warning(
                "restored %s: %s -> %s (%s)",
                c.path,
                c.old.text() if c.old else "?",
                c.new_text(),
                trigger,
            )
        for c in created:
            log.info("created %s c %s:%s %s (%s)", c.path, c.major, c.minor, c.new_text(), trigger)

    def _once(self, key: str, message: str, details: dict[str, Any]) -> None:
        """Log and audit a failure once, until it clears."""
        if key in self._reported:
            return
        self._reported.add(key)
        log.error("%s", message)
        with self.db.transaction() as conn:
            events.record(
                conn,
                kind="host",
                action="devices_failed",
                reason="device_watch",
                actor=DAEMON,
                message=message,
                details=details,
                ts=self._clock(),
            )

    # ---- who holds the nodes ---------------------------------------------------------

    def root_holders(self, paths: set[str]) -> list[dict[str, Any]]:
        """The processes running as root (effective uid 0) with one of these nodes open, from
        the live /proc: {pid, comm, node}. At most MAX_HOLDERS; [] when none (or unreadable)."""
        base = devnodes.at(self.root, "/").resolve()
        targets = {str(devnodes.at(base, p)): p for p in paths}
        found: list[dict[str, Any]] = []
        try:
            pids = sorted(int(n) for n in os.listdir(self._proc) if n.isdigit())
        except OSError:
            return []
        for pid in pids:
            if pid == self._own_pid or len(found) >= MAX_HOLDERS:
                continue
            here = self._proc / str(pid)
            try:
                if _effective_uid((here / "status").read_text()) != 0:
                    continue
                fds = os.listdir(here / "fd")
            except (OSError, ValueError):
                continue
            held: set[str] = set()
            for fd in fds:
                try:
                    link = os.readlink(here / "fd" / fd)
                except OSError:
                    continue
                if link in targets:
                    held.add(targets[link])
            if held:
                try:
                    comm = (here / "comm").read_text().strip()
                except OSError:
                    comm = "?"
                found += [{"pid": pid, "comm": comm, "node": node} for node in sorted(held)]
        return found[:MAX_HOLDERS]


def _effective_uid(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    raise ValueError("no Uid line")
