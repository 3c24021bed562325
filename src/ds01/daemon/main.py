"""`ds01d`: wiring, signals and the instance lock. Owns no policy of its own.

Foreground process (systemd runs it as root); unprivileged runs with --state-dir/--run-dir in a
temp dir serve tests and the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO

from ds01 import __version__
from ds01.errors import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Ds01Error,
    PermissionDenied,
    StateError,
    UsageError,
)
from ds01.paths import Paths
from ds01.store.db import set_aside, verify_state_file

log = logging.getLogger("ds01d")

HOST_ROOT_ENV = "DS01_HOST_ROOT"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ds01d",
        description="ds01 daemon: owns GPU allocation state and serves the ds01 API.",
    )
    p.add_argument("--config", help="config file (env DS01_CONFIG, default /etc/ds01/ds01.yaml)")
    p.add_argument("--sim", help="simulated machine file or shipped name (instead of NVML)")
    p.add_argument("--state-dir", help="state directory (env DS01_STATE_DIR, /var/lib/ds01)")
    p.add_argument("--run-dir", help="socket directory (env DS01_RUN_DIR, /run/ds01)")
    p.add_argument(
        "--host-root",
        help="keep the device nodes under DIR/dev, reading the driver's state under DIR/proc "
        "and DIR/sys, instead of / (env DS01_HOST_ROOT; for tests on a fake device tree)",
        metavar="DIR",
    )
    p.add_argument("--check", action="store_true", help="validate config and state, then exit")
    p.add_argument(
        "--init",
        action="store_true",
        help="start with an empty state when the state database is empty or damaged (the old "
        "file is kept beside it as ds01.db.broken-<time>)",
    )
    p.add_argument(
        "--restore",
        metavar="FILE",
        help="replace the state database with FILE (a backup), keeping the current one beside "
        "it as ds01.db.before-restore-<time>; refused while ds01d runs",
    )
    p.add_argument("--log-level", default=os.environ.get("DS01_LOG_LEVEL", "info"))
    p.add_argument("--version", action="version", version=f"ds01d {__version__}")
    return p.parse_args(argv)


class InstanceLock:
    """An flock on <dir>/ds01d.lock: one daemon per state directory, and one per run directory
    (a second daemon there would take over the first one's sockets)."""

    def __init__(self, path: Path, *, what: str = "state directory") -> None:
        self.path = path
        self.what = what
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            other = fh.read().strip() or "unknown"
            fh.close()
            flag = "--state-dir" if self.what == "state directory" else "--run-dir"
            raise StateError(
                f"another ds01d is already running on {self.path.parent} (pid {other})",
                why=f"Two daemons on one {self.what} would both hand out the same GPUs"
                + (" or take over each other's sockets." if flag == "--run-dir" else "."),
                fix=f"Stop the other one (systemctl stop ds01d) or use another {flag}.",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def run(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    paths = Paths.resolve(args.config, args.state_dir, args.run_dir)
    try:
        if args.restore is not None:
            if args.check or args.init:
                raise UsageError(
                    "--restore cannot be combined with --check or --init",
                    fix="Run 'ds01d --restore FILE' on its own, then start ds01d.",
                )
            sys.exit(_restore(paths, Path(args.restore)))
        if args.check:
            from ds01.daemon.check import check

            sys.exit(check(paths, args.sim))
        from ds01.daemon.service import Daemon

        _can_write(paths)
        # Both locks before anything is opened: a refused second daemon touches nothing.
        locks = _instance_locks(paths)
        try:
            for lock in locks:
                lock.acquire()
            _trusted_state(paths, init=args.init)
            host_root = args.host_root or os.environ.get(HOST_ROOT_ENV) or "/"
            daemon = Daemon(paths, sim=args.sim, host_root=Path(host_root))
            # uvloop's event loop (libuv): the gate relays every Docker request of every user
            # through it, and asyncio's own loop cost ~15% more CPU per request
            # (bench/RESULTS.md, gate).
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(_main(daemon))
        finally:
            for lock in locks:
                lock.release()
    except Ds01Error as err:
        for i, line in enumerate(err.lines()):
            sys.stderr.write(("ds01d: error: " if i == 0 else "  ") + line + "\n")
        sys.exit(err.exit_code if err.exit_code else EXIT_USAGE)
    except PermissionError as err:
        # Whatever _can_write could not foresee (a root-owned file in a writable directory):
        # one line, never a traceback.
        where = f": {err.filename}" if err.filename else ""
        sys.stderr.write(
            f"ds01d: error: permission denied{where} (as {_whoami()}); ds01d runs as root "
            "(systemctl start ds01d), or give it --state-dir and --run-dir it can write\n"
        )
        sys.exit(EXIT_REFUSED)
    except KeyboardInterrupt:
        sys.exit(130)


def _whoami() -> str:
    uid = os.geteuid()
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}, uid {uid}"
    except KeyError:
        return f"uid {uid}"


def _can_write(paths: Paths) -> None:
    """Refuse, in one line, to start where the state or socket directory cannot be written (or
    created): a non-root ds01d on the default paths. Unprivileged runs on directories of their
    own (tests, the demo) pass."""
    blocked = []
    for path, what in (
        (paths.state_dir, "state, --state-dir"),
        (paths.run_dir, "sockets, --run-dir"),
    ):
        existing = path.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            blocked.append(f"{path} ({what})")
    if blocked:
        raise PermissionDenied(
            f"must run as root (systemctl start ds01d): as {_whoami()} it cannot write "
            + " or ".join(blocked)
        )


def _instance_locks(paths: Paths) -> list[InstanceLock]:
    return [
        InstanceLock(paths.lock_file),
        InstanceLock(paths.run_dir / "ds01d.lock", what="run directory"),
    ]


def _restore(paths: Paths, source: Path) -> int:
    """`ds01d --restore FILE`, under the same two locks as a running daemon: refused while one
    runs on this state or run directory."""
    from ds01.store.backup import restore_state

    locks = _instance_locks(paths)
    try:
        for lock in locks:
            lock.acquire()
        result = restore_state(paths.db, source)
    finally:
        for lock in locks:
            lock.release()
    for line in result.lines():
        print(f"ds01d: {line}")
    return EXIT_OK


def _trusted_state(paths: Paths, *, init: bool) -> None:
    """Refuse an empty or damaged state database, unless told to start afresh (--init)."""
    try:
        verify_state_file(paths.db)
    except StateError as err:
        if not init:
            raise
        kept = set_aside(paths.db)
        log.warning("%s; starting with an empty state (--init), the old file is %s", err.what, kept)


async def _main(daemon: object) -> None:
    from ds01.daemon.service import Daemon

    assert isinstance(daemon, Daemon)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_config)
    await daemon.start()
    log.info("ds01d %s ready on %s", __version__, daemon.paths.api_socket)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await daemon.stop()
