"""The notifier's slow channels against real servers the test starts: an HTTP server taking
the webhook's POST (stdlib http.server), an SMTP server taking the mail (aiosmtpd), and a dead
webhook — a socket that accepts and never answers. A dead channel never holds up the caller
nor another channel; every outcome (delivered, failed, skipped, with why) is reported."""

from __future__ import annotations

import os
import pwd
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds01.config import parse_config_text
from ds01.config.schema import NotifySection
from ds01.notify import Notifier, Outcome
from local_servers import DeadHook, Hook, Inbox, free_port, smtp_server
from support import wait_for

MESSAGE = "Your container 'thesis' will be stopped at 15:05."


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def dead() -> Iterator[DeadHook]:
    h = DeadHook()
    yield h
    h.close()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


def _settings(text: str) -> NotifySection:
    return parse_config_text(text, "test.yaml").notify


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def __call__(self, outcomes: list[Outcome]) -> None:
        with self._lock:
            self.outcomes += outcomes

    def of(self, channel: str) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.channel == channel]


def _notifier(text: str, tmp_path: Path) -> tuple[Notifier, Recorder]:
    rec = Recorder()
    settings = _settings(text)
    return Notifier(tmp_path / "n.log", settings=lambda: settings, on_outcome=rec), rec


def test_the_webhook_gets_the_text_and_the_outcome_never_names_its_secret_path(
    hook: Hook, tmp_path: Path
) -> None:
    n, rec = _notifier(
        f"notify:\n  channels: [webhook]\n  webhook:\n    url: {hook.url}\n", tmp_path
    )
    delivery = n.notify("alice", "idle_warning", MESSAGE, allocation_id=7)
    assert delivery.queued == ("webhook",)
    (done,) = wait_for(lambda: rec.of("webhook"), "the webhook's outcome", 10)
    assert hook.bodies == [{"text": f"ds01 → alice:\n{MESSAGE}"}]
    assert hook.paths == ["/hooks/SECRET-TOKEN"]
    assert (done.status, done.topic, done.allocation_id) == ("delivered", "idle_warning", 7)
    host = hook.url.split("/hooks")[0]
    assert done.detail == f"{host} answered 200"
    n.close()


def test_a_webhook_answering_an_error_is_a_failure(tmp_path: Path) -> None:
    broken = Hook(status=500)
    try:
        n, rec = _notifier(
            f"notify:\n  channels: [webhook]\n  webhook:\n    url: {broken.url}\n", tmp_path
        )
        n.notify("alice", "idle_warning", MESSAGE)
        (done,) = wait_for(lambda: rec.of("webhook"), "the webhook's outcome", 10)
        assert done.status == "failed"
        assert done.detail.endswith("answered 500 Internal Server Error")
        assert "SECRET" not in done.detail
    finally:
        broken.close()


def test_the_webhook_url_can_come_from_a_root_only_file(hook: Hook, tmp_path: Path) -> None:
    secret = tmp_path / "webhook-url"
    secret.write_text(hook.url + "\n")
    secret.chmod(0o600)
    n, rec = _notifier(
        f"notify:\n  channels: [webhook]\n  webhook:\n    url_file: {secret}\n", tmp_path
    )
    n.notify("alice", "grant", MESSAGE)
    (done,) = wait_for(lambda: rec.of("webhook"), "the webhook's outcome", 10)
    assert done.status == "delivered" and len(hook.bodies) == 1


def test_a_mail_goes_to_the_users_address_from_the_template_or_the_map(
    smtp: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = smtp
    n, rec = _notifier(
        "notify:\n  channels: [email]\n  email:\n    smtp_host: 127.0.0.1\n"
        f"    smtp_port: {port}\n    sender: ds01@lab.example\n"
        "    address: '{user}@lab.example'\n"
        "    addresses: {bob: robert@elsewhere.example}\n",
        tmp_path,
    )
    n.notify("alice", "idle_warning", MESSAGE, allocation_id=3)
    n.notify("bob", "idle_timeout", "stopped")
    n.notify("h.baker@hertie-school.lan", "idle_warning", MESSAGE)  # no valid address from it
    wait_for(lambda: len(rec.of("email")) == 3 or None, "three e-mail outcomes", 10)
    assert [(to, m["Subject"]) for to, m in inbox.mails] == [
        (["alice@lab.example"], "ds01: idle warning"),
        (["robert@elsewhere.example"], "ds01: idle timeout"),
    ]
    first = inbox.mails[0][1]
    assert (first["From"], first["Auto-Submitted"]) == ("ds01@lab.example", "auto-generated")
    assert first.get_payload(decode=True).decode().strip() == MESSAGE
    by_user = {o.user: o for o in rec.of("email")}
    assert by_user["alice"].status == "delivered"
    assert by_user["alice"].detail == f"sent to alice@lab.example via 127.0.0.1:{port}"
    assert by_user["h.baker@hertie-school.lan"].status == "skipped"
    assert "no e-mail address" in by_user["h.baker@hertie-school.lan"].detail


def test_an_smtp_server_that_is_not_there_is_a_failure(tmp_path: Path) -> None:
    port = free_port()
    n, rec = _notifier(
        f"notify:\n  channels: [email]\n  email:\n    smtp_host: 127.0.0.1\n"
        f"    smtp_port: {port}\n    address: '{{user}}@lab.example'\n",
        tmp_path,
    )
    n.notify("alice", "idle_warning", MESSAGE)
    (done,) = wait_for(lambda: rec.of("email"), "the e-mail outcome", 10)
    assert done.status == "failed" and done.detail.startswith(f"127.0.0.1:{port}: ")


def test_a_dead_webhook_holds_up_neither_the_caller_nor_the_mail(
    dead: DeadHook, smtp: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = smtp
    n, rec = _notifier(
        f"notify:\n  channels: [terminal, webhook, email]\n"
        f"  webhook:\n    url: {dead.url}\n    timeout: 2s\n"
        f"  email:\n    smtp_host: 127.0.0.1\n    smtp_port: {port}\n"
        "    address: '{user}@lab.example'\n",
        tmp_path,
    )
    delivery = n.notify("alice", "idle_warning", MESSAGE)
    # notify() returned with the webhook queued: its server has not answered and never will.
    assert delivery.queued == ("webhook", "email")
    assert rec.of("webhook") == []
    assert [o.status for o in rec.of("terminal")] == ["skipped"]  # not logged in
    # The mail goes while the webhook hangs: its outcome comes first.
    wait_for(lambda: rec.of("email"), "the mail", 10)
    # (The webhook's worker may connect after the mail went: on a busy machine its first
    # notice also pays for importing httpx.) Connected, it still has no outcome.
    assert dead.accepted.wait(10)
    assert rec.of("webhook") == []
    assert len(inbox.mails) == 1
    (failed,) = wait_for(lambda: rec.of("webhook"), "the webhook's timeout", 20)
    assert failed.status == "failed"
    assert failed.detail == f"no answer from {dead.url.rsplit('/', 1)[0]} within 2 s"
    # The terminal's outcome is recorded by notify() itself, the others by their workers: the
    # mail's worker may finish before notify() records the terminal's, so only the order of
    # the two queued channels is the claim.
    assert [o.channel for o in rec.outcomes if o.channel != "terminal"] == ["email", "webhook"]


def test_a_full_queue_drops_the_notice_and_says_so(dead: DeadHook, tmp_path: Path) -> None:
    n, rec = _notifier(
        f"notify:\n  channels: [webhook]\n  queue_size: 1\n"
        f"  webhook:\n    url: {dead.url}\n    timeout: 30s\n",
        tmp_path,
    )
    assert n.notify("alice", "idle_warning", "first").queued == ("webhook",)
    wait_for(lambda: dead.accepted.is_set() or None, "the first POST to hang", 10)
    assert n.notify("alice", "idle_warning", "second").queued == ("webhook",)  # waits
    third = n.notify("alice", "idle_warning", "third")
    assert third.queued == ()
    (dropped,) = rec.of("webhook")
    assert (dropped.status, dropped.detail) == ("failed", "its queue is full: notice dropped")


def test_channels_not_chosen_are_not_tried(hook: Hook, tmp_path: Path) -> None:
    n, rec = _notifier(
        f"notify:\n  channels: [banner]\n  webhook:\n    url: {hook.url}\n", tmp_path
    )
    delivery = n.notify("alice", "idle_warning", MESSAGE)
    assert (delivery.queued, delivery.banner, delivery.terminals) == ((), False, ())
    assert rec.outcomes == [] and hook.bodies == []
    assert delivery.logged  # the admins' log has every notice


def test_the_workspace_file_is_written_for_notices_about_a_container_with_one(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()  # the test's own user's, as a user's workspace is theirs
    me = pwd.getpwuid(os.getuid()).pw_name
    rec = Recorder()
    settings = _settings("notify:\n  channels: [workspace]\n")
    n = Notifier(
        None,
        settings=lambda: settings,
        workspace_of=lambda cid: ws if cid == "c-with" else None,
        on_outcome=rec,
    )
    assert n.notify(me, "idle_warning", MESSAGE, container_id="c-with").queued == ("workspace",)
    n.notify(me, "idle_warning", MESSAGE, container_id="c-without")
    n.notify(me, "grant", "granted")  # about no container: no workspace to write
    assert n.wait_idle(10)
    assert [(o.status, o.detail) for o in rec.of("workspace")] == [
        ("delivered", f"created {ws / 'ds01-notices.txt'}"),
        ("skipped", "the container mounts no workspace"),
    ]
    assert MESSAGE in (ws / "ds01-notices.txt").read_text()
