"""Slow channels off the caller's thread: one bounded queue and one worker thread per channel.

Owns the queueing and the timing: a job put here returns at once (or is refused when the
channel's queue is full — the caller records that as a failure), and a channel that hangs
delays only its own later notices, never an enforcing thread nor another channel. Must not
decide what a job does: a job is a callable returning what was done, raising for a failure.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("ds01.notify")


@dataclass(frozen=True)
class Job:
    run: Callable[[], str]  # what was done, in words; raises when it failed
    done: Callable[[str | None, str, float], None]  # (error or None, result, seconds taken)


class Outbox:
    def __init__(self, channel: str, size: int) -> None:
        self.channel = channel
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=size)
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._work, name=f"notify-{channel}", daemon=True)
        self._thread.start()

    def put(self, job: Job) -> bool:
        """Queue the job; False when the queue is full (the job is not run)."""
        with self._idle:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                return False
            self._busy += 1
        return True

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            start = time.monotonic()
            error: str | None = None
            result = ""
            try:
                result = job.run()
            except Exception as e:
                error = str(e) or type(e).__name__
            try:
                job.done(error, result, time.monotonic() - start)
            except Exception:
                log.exception("notify %s: recording an outcome failed", self.channel)
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until every queued job is done (tests, shutdown); False at the timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self) -> None:
        """Stop after the queued jobs; a hung job's thread is a daemon and dies with ds01d."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
