"""The Unix-socket listeners of ds01d — api.sock and the Docker gate's docker.sock — share one
accept loop, one connection table and one kind of limits (issue 10, D9).

    ConnectionLimits  one listener's times and counts: idle, head and body timeouts;
                      connections in all and per uid
    ConnectionTable   how many connections each uid holds; admits or refuses a new one
    RateLimitedLog    at most a few records per cause and minute; the rest are counted
    UnixListener      accepts, identifies the peer (SO_PEERCRED), admits or refuses at once,
                      and runs one task per admitted connection

A connection over a limit gets the listener's short refusal and is closed before anything is
read from it, so one user's flood of connections costs other users one accept() each, never a
slot. Accept errors (out of file descriptors, memory or buffers) pause accepting for a moment
and are logged at a bounded rate, never once per attempt. How each listener applies the
timeouts is its own: the gate reads request heads itself, the API guards aiohttp's protocol
(api/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ds01.identity import peer_credentials

ACCEPT_BATCH = 64  # connections accepted per wake-up, so other work runs in between
ACCEPT_PAUSE_S = 0.5  # after an accept error such as EMFILE
OPEN_FILES_WANTED = 65536  # the soft RLIMIT_NOFILE ds01d raises itself to (capped by the hard)


@dataclass(frozen=True)
class ConnectionLimits:
    idle_timeout_s: float = 60.0  # a connection with no request in progress
    head_timeout_s: float = 15.0  # from a request's first byte to its last header
    body_timeout_s: float = 30.0  # reading a request body the server checks
    max_connections: int = 1024
    max_connections_per_uid: int = 64


@dataclass(frozen=True)
class Peer:
    """The process at the other end, from the kernel (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


class ConnectionTable:
    """Connections held per uid and in all; admit() reserves one, release() gives it back."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.total = 0
        self._per_uid: dict[int, int] = {}

    def held(self, uid: int) -> int:
        return self._per_uid.get(uid, 0)

    def admit(self, uid: int) -> bool:
        if (
            self.total >= self.limits.max_connections
            or self.held(uid) >= self.limits.max_connections_per_uid
        ):
            return False
        self.total += 1
        self._per_uid[uid] = self.held(uid) + 1
        return True

    def release(self, uid: int) -> None:
        self.total -= 1
        left = self.held(uid) - 1
        if left > 0:
            self._per_uid[uid] = left
        else:
            self._per_uid.pop(uid, None)


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """Logs at most `burst` records per key in each `window_s`; the rest are counted, and the
    count is logged with the first record of a later window. Keys are fixed words ("accept",
    "limit", …), never user input, so the table stays small."""

    def __init__(self, logger: logging.Logger, *, burst: int = 5, window_s: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def log(
        self,
        level: int,
        key: str,
        msg: str,
        *args: object,
        exc_info: BaseException | bool | None = None,
    ) -> bool:
        """Log or count one record; True when it was logged."""
        now = time.monotonic()
        w = self._windows.get(key)
        if w is None or now - w.start >= self.window_s:
            if w is not None and w.suppressed:
                self.logger.log(
                    level,
                    "%d more like the next were not logged in the last %.0f s (%s)",
                    w.suppressed,
                    now - w.start,
                    key,
                )
            w = self._windows[key] = _Window(now)
        if w.logged >= self.burst:
            w.suppressed += 1
            return False
        w.logged += 1
        if w.logged == self.burst:
            msg += f" (more of these within {self.window_s:.0f} s are counted, not logged)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True


Serve = Callable[[socket.socket, Peer], Awaitable[None]]


class UnixListener:
    """Accepts on a bound, listening Unix socket and runs `serve(conn, peer)` for each admitted
    connection; `serve` owns `conn` (it must close it). A connection over the limits is sent
    `refusal` (a complete HTTP response) and closed."""

    def __init__(
        self,
        name: str,
        limits: ConnectionLimits,
        serve: Serve,
        refusal: bytes,
        logger: logging.Logger,
    ) -> None:
        self.name = name
        self.table = ConnectionTable(limits)
        self.refused = 0
        self._serve = serve
        self._refusal = refusal
        self.log = RateLimitedLog(logger)
        self._sock: socket.socket | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        raise_open_files_limit()
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_ready)

    async def stop(self, *, cancel: bool) -> None:
        """Stop accepting; with cancel, also end every connection and wait for them."""
        if self._resume is not None:
            self._resume.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        if not cancel:
            return
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- accepting --------------------------------------------------------------------

    def _accept_ready(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._pause(sock, exc)
                return
            self._admit(conn)

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        """EMFILE and the like: the socket stays readable, so accepting again at once would
        spin (and log) without end. Pause, log at a bounded rate, resume."""
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            why = f"{type(exc).__name__}: {why}"
        self.log.log(
            logging.WARNING,
            "accept",
            "%s: cannot accept connections (%s); pausing %.1f s",
            self.name,
            why,
            ACCEPT_PAUSE_S,
        )
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())

        def resume() -> None:
            self._resume = None
            if self._sock is sock:
                loop.add_reader(sock.fileno(), self._accept_ready)

        self._resume = loop.call_later(ACCEPT_PAUSE_S, resume)

    def _admit(self, conn: socket.socket) -> None:
        try:
            pid, uid, gid = peer_credentials(conn)
        except OSError:
            conn.close()
            return
        if not self.table.admit(uid):
            self.refused += 1
            self.log.log(
                logging.WARNING,
                "limit",
                "%s: too many connections (uid %d holds %d, %d in all); refusing more",
                self.name,
                uid,
                self.table.held(uid),
                self.table.total,
            )
            _refuse(conn, self._refusal)
            return
        peer = Peer(pid, uid, gid)
        task = asyncio.get_running_loop().create_task(self._run(conn, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: socket.socket, peer: Peer) -> None:
        try:
            await self._serve(conn, peer)
        except Exception:
            self.log.log(
                logging.ERROR,
                "connection",
                "%s: a connection from uid %d failed",
                self.name,
                peer.uid,
                exc_info=True,
            )
        finally:
            self.table.release(peer.uid)


def _refuse(conn: socket.socket, refusal: bytes) -> None:
    """Best effort, never blocking: the refusal fits in the socket buffer of a new connection."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(refusal)
    conn.close()


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> None:
    """Raise the soft limit on open files towards `wanted` (never above the hard limit): the
    default 1024 is less than the listeners' connection limits, and running out of descriptors
    is what turned a connection flood into an accept() storm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
