"""Telling users things, on the channels the config chooses (notify.channels):

- terminal (tty.py): every terminal the user is logged in on, as `wall` writes;
- banner (banner.py): kept by ds01d, printed once by the user's next `ds01` command;
- workspace (workspace.py): appended to a file at the top of the container's workspace;
- webhook (webhook.py): a chat channel's incoming webhook;
- email (smtp.py): a mail to the user's address.

Every notice is also appended to the notifications log (logfile.py), the admin's copy.

Owns delivery and its report: `Notifier.notify(user, topic, message)` delivers on the quick
channels (terminal, banner) in the caller's thread — neither can block — and queues the others
on their own worker threads (outbox.py), so that a hung webhook, SMTP server or NFS workspace
never delays enforcement. Every outcome, per channel (delivered, failed, skipped, with why), is
handed to `on_outcome`, which ds01d writes to the audit log. Must not decide *what* to say or
*when* (services do), and must not raise for a failed channel.
"""

from __future__ import annotations

import logging
import pwd
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from ds01.config.schema import NotifySection
from ds01.notify import logfile, tty
from ds01.notify.outbox import Job, Outbox

log = logging.getLogger("ds01.notify")

NOTIFICATIONS_LOG = "notifications.log"
SLOW_CHANNELS = ("workspace", "webhook", "email")

Status = Literal["delivered", "failed", "skipped"]


@dataclass(frozen=True)
class Outcome:
    """What one channel did with one notice (one audit event each)."""

    user: str
    topic: str
    channel: str
    status: Status
    detail: str  # where it went, or why not
    ts: float
    allocation_id: int | None = None
    seconds: float = 0.0  # how long the delivery took (slow channels)


@dataclass(frozen=True)
class Delivery:
    """Where one notification went at once, and which channels have it queued."""

    user: str
    topic: str
    terminals: tuple[str, ...]  # terminals written
    failed: tuple[str, ...]  # "terminal: why" for those that could not be written
    logged: bool  # appended to the notifications log
    banner: bool = False  # kept for the user's next ds01 command
    queued: tuple[str, ...] = field(default=())  # slow channels it waits on

    def summary(self) -> dict[str, object]:
        return {
            "terminals": len(self.terminals),
            "banner": self.banner,
            "queued": list(self.queued),
            "logged": self.logged,
        }


class BannerSink(Protocol):
    """Where banners are kept until the user's next command (services/banners.py)."""

    def post(self, user: str, topic: str, message: str, ts: float) -> None: ...


def _no_outcomes(outcomes: list[Outcome]) -> None:
    pass


class Notifier:
    """Delivers messages to users on the configured channels and reports every outcome."""

    def __init__(
        self,
        log_path: Path | None,
        *,
        settings: Callable[[], NotifySection] = NotifySection,
        banners: BannerSink | None = None,
        workspace_of: Callable[[str], Path | None] | None = None,
        on_outcome: Callable[[list[Outcome]], None] = _no_outcomes,
        utmp: Path = tty.UTMP_PATH,
        pts_dir: Path = tty.PTS_DIR,
        dev: Path = tty.DEV_DIR,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log_path = log_path
        self._settings = settings
        self._banners = banners
        self._workspace_of = workspace_of
        self._on_outcome = on_outcome
        self._utmp = utmp
        self._pts_dir = pts_dir
        self._dev = dev
        self._clock = clock
        self._outboxes: dict[str, Outbox] = {}
        self._outboxes_lock = threading.Lock()  # notify() runs on several threads

    def notify(
        self,
        user: str,
        topic: str,
        message: str,
        *,
        allocation_id: int | None = None,
        container_id: str | None = None,
    ) -> Delivery:
        """Deliver `message` to `user` on every configured channel; never raises for one that
        fails. `container_id`: the container it is about (its workspace gets the file)."""
        now = self._clock()
        cfg = self._settings()
        channels = set(cfg.channels)
        outcomes: list[Outcome] = []

        def outcome(channel: str, status: Status, detail: str, seconds: float = 0.0) -> Outcome:
            return Outcome(user, topic, channel, status, detail, now, allocation_id, seconds)

        result = tty.TtyResult((), ())
        if "terminal" in channels:
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
            if result.written:
                outcomes.append(outcome("terminal", "delivered", ", ".join(result.written)))
            elif result.failed:
                outcomes.append(outcome("terminal", "failed", "; ".join(result.failed)))
            else:
                outcomes.append(outcome("terminal", "skipped", "not logged in"))

        banner = False
        if "banner" in channels and self._banners is not None:
            try:
                self._banners.post(user, topic, tty.sanitize(message), now)
                banner = True
                outcomes.append(outcome("banner", "delivered", "kept for the next ds01 command"))
            except Exception as e:  # the database (full disk): the other channels still go
                log.error("notify %s: keeping a banner failed: %s", user, e)
                outcomes.append(outcome("banner", "failed", str(e) or type(e).__name__))

        queued: list[str] = []
        for channel in SLOW_CHANNELS:
            if channel not in channels or (channel == "workspace" and container_id is None):
                continue  # not chosen, or a notice about no container (a grant): no workspace
            run = self._job(channel, cfg, user, topic, message, now, container_id)
            if run is None:
                outcomes.append(outcome(channel, "skipped", self._skip_why(channel)))
                continue
            job = Job(run, self._reporter(user, topic, channel, now, allocation_id))
            if self._outbox(channel, cfg.queue_size).put(job):
                queued.append(channel)
            else:
                outcomes.append(outcome(channel, "failed", "its queue is full: notice dropped"))

        logged = self._log(user, topic, message, result.written, now)
        self._report(outcomes)
        return Delivery(user, topic, result.written, result.failed, logged, banner, tuple(queued))

    def _job(
        self,
        channel: str,
        cfg: NotifySection,
        user: str,
        topic: str,
        message: str,
        now: float,
        container_id: str | None,
    ) -> Callable[[], str] | None:
        """The delivery to run on the channel's worker, or None when it has nowhere to go."""
        if channel == "workspace":
            if container_id is None or self._workspace_of is None:
                return None
            cid = container_id
            return lambda: self._to_workspace(cfg, user, message, now, cid)
        if channel == "webhook":
            return lambda: self._to_webhook(cfg, user, message)
        from ds01.notify import smtp

        to = smtp.address_of(user, cfg.email)
        if to is None:
            return None
        return lambda: self._to_mail(cfg, to, topic, message)

    @staticmethod
    def _skip_why(channel: str) -> str:
        return {
            "workspace": "ds01d cannot find workspaces here",
            "email": "no e-mail address for this user (notify.email)",
        }.get(channel, "nowhere to deliver")

    def _to_workspace(
        self, cfg: NotifySection, user: str, message: str, now: float, container_id: str
    ) -> str:
        from ds01.notify import workspace

        assert self._workspace_of is not None
        directory = self._workspace_of(container_id)  # the engine's inspect: on this worker
        if directory is None:
            return "skipped: the container mounts no workspace"
        pw = pwd.getpwnam(user)
        data = workspace.entry(message, datetime.fromtimestamp(now))
        done = workspace.append(
            directory,
            cfg.workspace.file,
            data,
            pw.pw_uid,
            pw.pw_gid,
            max_size=cfg.workspace.max_size,
        )
        return f"{done} {directory / cfg.workspace.file}"

    @staticmethod
    def _to_webhook(cfg: NotifySection, user: str, message: str) -> str:
        from ds01.notify import webhook

        w = cfg.webhook
        url = webhook.url_of(w.url, w.url_file)
        status = webhook.post(url, webhook.text_of(user, message), float(w.timeout))
        return f"{webhook.where(url)} answered {status}"

    @staticmethod
    def _to_mail(cfg: NotifySection, to: str, topic: str, message: str) -> str:
        from ds01.notify import smtp

        smtp.send(cfg.email, smtp.message_of(cfg.email.sender, to, topic, message))
        return f"sent to {to} via {cfg.email.smtp_host}:{cfg.email.smtp_port}"

    def _reporter(
        self, user: str, topic: str, channel: str, ts: float, allocation_id: int | None
    ) -> Callable[[str | None, str, float], None]:
        def done(error: str | None, result: str, seconds: float) -> None:
            if error is not None:
                log.warning("notify %s via %s failed: %s", user, channel, error)
                status: Status = "failed"
                detail = error
            elif result.startswith("skipped: "):
                status, detail = "skipped", result.removeprefix("skipped: ")
            else:
                status, detail = "delivered", result
            self._report(
                [Outcome(user, topic, channel, status, detail, ts, allocation_id, seconds)]
            )

        return done

    def _report(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        try:
            self._on_outcome(outcomes)
        except Exception:
            log.exception("notify: recording %d outcome(s) failed", len(outcomes))

    def _outbox(self, channel: str, size: int) -> Outbox:
        with self._outboxes_lock:
            box = self._outboxes.get(channel)
            if box is None:
                box = self._outboxes[channel] = Outbox(channel, size)
            return box

    def _log(
        self, user: str, topic: str, message: str, terminals: tuple[str, ...], now: float
    ) -> bool:
        if self.log_path is None:
            return False
        try:
            logfile.append(
                self.log_path,
                user=user,
                topic=topic,
                message=tty.sanitize(message),
                terminals=list(terminals),
                ts=now,
            )
        except OSError as e:
            log.error("cannot append to %s: %s", self.log_path, e)
            return False
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Until the slow channels' queued notices are done (tests; shutdown)."""
        deadline = time.monotonic() + timeout
        return all(
            box.wait_idle(max(0.0, deadline - time.monotonic()))
            for box in list(self._outboxes.values())
        )

    def close(self) -> None:
        for box in self._outboxes.values():
            box.close()
