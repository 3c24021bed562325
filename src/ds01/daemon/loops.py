"""Supervised background loops: a loop of ds01d never dies of an exception.

Each pass that fails — a ds01 error, an SQLite `OperationalError` (an admin's `sqlite3` holding
the write lock, a full disk), anything — is logged once per distinct cause (with its traceback
the first time), retried with a growing pause (up to a minute), and logged again when the loop
recovers. Every loop's last success and current error are kept for health reports (issue 10),
with its interval and start time, so `ds01 doctor` can also tell a loop that stopped passing
(stale) from one that is merely between passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ds01.errors import Ds01Error

log = logging.getLogger("ds01d.loops")

MAX_BACKOFF_S = 60.0


@dataclass
class LoopHealth:
    """name → time of the last successful pass; name → the error the loop is failing with;
    name → its interval between passes now (seconds); name → when it started (epoch)."""

    last_ok: dict[str, float] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)
    interval_s: dict[str, float] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Ds01Error):
        return " | ".join(exc.lines())
    return f"{type(exc).__name__}: {exc}"


async def supervised(
    name: str,
    step: Callable[[], Awaitable[None]],
    interval_s: Callable[[], float],
    health: LoopHealth,
    wake: asyncio.Event | None = None,
) -> None:
    """Run `step` every interval_s() seconds forever, surviving whatever it raises. With `wake`,
    a pass also starts as soon as the event is set (ds01d's device watch: inotify), except
    while the loop is failing, when the backoff pause holds."""
    failures = 0
    health.since[name] = time.time()
    while True:
        health.interval_s[name] = interval_s()
        pause = interval_s() if not failures else min(MAX_BACKOFF_S, interval_s() * 2**failures)
        if wake is not None and not failures:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), pause)
            wake.clear()
        else:
            await asyncio.sleep(pause)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = min(failures + 1, 16)
            cause = _describe(exc)
            if health.failing.get(name) != cause:
                if isinstance(exc, Ds01Error):
                    log.error("%s failed, retrying: %s", name, cause)
                else:
                    log.exception("%s failed, retrying: %s", name, cause)
            health.failing[name] = cause
        else:
            if failures:
                log.info("%s works again after %d failed pass(es)", name, failures)
            failures = 0
            health.failing.pop(name, None)
            health.last_ok[name] = time.time()
