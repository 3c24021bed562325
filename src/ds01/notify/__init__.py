"""Telling users things: the terminal channel (tty.py) and the notifications log (logfile.py).

Owns delivery and its report: `Notifier.notify(user, topic, message)` writes to every terminal
of the user and appends the message to the log, and says where it went. Must not decide *what*
to say or *when* (services do), and must not raise for a failed channel: a user who is not
logged in still gets the log line, and a full log disk must not stop enforcement.

Imports nothing from ds01 beyond the standard library.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ds01.notify import logfile, tty

log = logging.getLogger("ds01.notify")

NOTIFICATIONS_LOG = "notifications.log"


@dataclass(frozen=True)
class Delivery:
    """Where one notification went."""

    user: str
    topic: str
    terminals: tuple[str, ...]  # terminals written
    failed: tuple[str, ...]  # "terminal: why" for those that could not be written
    logged: bool  # appended to the notifications log

    def summary(self) -> dict[str, object]:
        return {"terminals": len(self.terminals), "logged": self.logged}


class Notifier:
    """Delivers messages to users on their terminals and in the notifications log."""

    def __init__(
        self,
        log_path: Path | None,
        *,
        utmp: Path = tty.UTMP_PATH,
        pts_dir: Path = tty.PTS_DIR,
        dev: Path = tty.DEV_DIR,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log_path = log_path
        self._utmp = utmp
        self._pts_dir = pts_dir
        self._dev = dev
        self._clock = clock

    def notify(self, user: str, topic: str, message: str) -> Delivery:
        now = self._clock()
        result = tty.write_to_user(
            user,
            message,
            utmp=self._utmp,
            pts_dir=self._pts_dir,
            dev=self._dev,
            when=datetime.fromtimestamp(now),
        )
        for failure in result.failed:
            log.debug("notify %s: %s", user, failure)
        logged = False
        if self.log_path is not None:
            try:
                logfile.append(
                    self.log_path,
                    user=user,
                    topic=topic,
                    message=tty.sanitize(message),
                    terminals=list(result.written),
                    ts=now,
                )
                logged = True
            except OSError as e:
                log.error("cannot append to %s: %s", self.log_path, e)
        return Delivery(user, topic, result.written, result.failed, logged)
