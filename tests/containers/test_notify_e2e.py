"""Issue 15's "Done when", for the notifications: an idle GPU container is warned three times and
stopped on time, and the warnings reach its owner on every configured channel — a real terminal
of the real user, the banner their next `ds01` command prints, the file in the container's
workspace, a webhook receiver and an SMTP server the test starts; a dead webhook (it accepts
and never answers) delays neither the stop nor the other channels. Real ds01d on a simulated
machine whose GPU activity the test drives, real containers on the private engine; every wait
is a bounded poll, and the order of events, not a measured time, is what is checked.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from containers_support import (
    MACHINES,
    Daemon,
    Users,
    add_user,
    db_rows,
    deploy,
    need,
    remove_owned,
    running_daemon,
    short_tmp,
    unique_user,
)

from ds01.inventory import sim
from local_servers import DeadHook, Hook, smtp_server
from support import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

CONFIG = """\
admin_group: ds01t-admins
gpu:
  sample_interval: 1s
defaults:
  max_gpueq: 2
  max_units_per_container: 1
  allow_full_gpu: true
  cpus: 1
  memory: 128m
  gpu_hold_after_stop: 2s
  idle_timeout: {idle}
  policy:
    idle_gpu_util_pct: 5
    idle_samples: 2
    warn_before: 1s
notify:
  channels: [terminal, banner, workspace, webhook, email]
  webhook:
    url: {url}
    timeout: {hook_timeout}
  email:
    smtp_host: 127.0.0.1
    smtp_port: {smtp_port}
    sender: ds01@lab.example
    address: "{{user}}@lab.example"
"""
SIGN = "*** ds01 notice ("


class Pty:
    """A real pseudo-terminal handed to the user, as a login gives them one."""

    def __init__(self, user: str) -> None:
        self.master, self.slave = os.openpty()
        pw = pwd.getpwnam(user)
        os.chown(os.ttyname(self.slave), pw.pw_uid, pw.pw_gid)
        os.set_blocking(self.master, False)
        self.seen = ""

    def text(self) -> str:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk.decode(errors="replace")
        return self.seen

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def machine() -> Iterator[Path]:
    base = short_tmp()
    path = base / "4xA100.yaml"
    shutil.copy(MACHINES / "4xA100-40GB.yaml", path)
    sim.clear_processes(path)
    for gpu in ("0", "1", "2", "3"):
        sim.set_utilization(path, gpu, 0)
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def alice(docker_client: docker.DockerClient) -> Iterator[str]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    name = unique_user("alice")
    add_user(users, name)
    try:
        yield name
    finally:
        remove_owned(docker_client, [name])
        users.cleanup()


def _workspace(user: str) -> Path:
    pw = pwd.getpwnam(user)
    ws = Path(pw.pw_dir) / "thesis"
    ws.mkdir()
    os.chown(ws, pw.pw_uid, pw.pw_gid)
    return ws


def _events(d: Daemon, alloc_id: int, kind: str) -> list[dict[str, Any]]:
    rows = db_rows(
        d,
        "SELECT id, ts, action, reason, details FROM events WHERE allocation_id = ? AND kind = ?"
        " ORDER BY id",
        alloc_id,
        kind,
    )
    return [
        {"id": r[0], "ts": r[1], "action": r[2], "reason": r[3], "details": json.loads(r[4])}
        for r in rows
    ]


def _steps(d: Daemon, alloc_id: int) -> list[tuple[str, str]]:
    return [
        (e["action"], e["details"].get("stage") or e["reason"])
        for e in _events(d, alloc_id, "container")
    ]


def _delivered(d: Daemon, alloc_id: int) -> dict[str, list[str]]:
    """channel → the topics delivered on it, oldest first."""
    out: dict[str, list[str]] = {}
    for e in _events(d, alloc_id, "notify"):
        if e["action"] == "delivered":
            out.setdefault(e["details"]["channel"], []).append(e["reason"])
    return out


def _until_released(d: Daemon, alloc_id: int) -> None:
    wait_for(
        lambda: "released" in [e["action"] for e in _events(d, alloc_id, "alloc")],
        f"allocation {alloc_id} to be released",
        90,
        detail=lambda: f"{_steps(d, alloc_id)}\n{d.log()[-3000:]}",
    )


def _all_told(d: Daemon, alloc_id: int) -> bool:
    """Each of the five channels delivered the four notices."""
    done = _delivered(d, alloc_id)
    return len(done) == 5 and all(len(topics) == 4 for topics in done.values())


WARNINGS = ["idle_warning"] * 3
TOLD = [*WARNINGS, "idle_timeout"]  # three warnings, then the stop


def test_idle_warnings_reach_the_owner_on_five_channels_and_the_stop_is_on_time(
    docker_host: str, docker_client: docker.DockerClient, machine: Path, alice: str
) -> None:
    hook = Hook()
    tty = Pty(alice)
    try:
        with smtp_server() as (inbox, port):
            config = CONFIG.format(idle="16s", url=hook.url, hook_timeout="10s", smtp_port=port)
            with running_daemon(config, docker_host, machine) as d:
                ws = _workspace(alice)
                mine = deploy(d, alice, "thesis", "--gpus", "1", "--workspace", str(ws))
                alloc = mine["allocation"]["id"]
                _until_released(d, alloc)
                assert _steps(d, alloc) == [
                    ("idle_warning", "50%"),
                    ("idle_warning", "80%"),
                    ("idle_warning", "warn_before"),
                    ("stopping", "idle_timeout"),
                ]
                events = _events(d, alloc, "container")
                (deadline,) = {e["details"]["deadline"] for e in events}
                assert events[3]["ts"] >= deadline  # never before the announced time
                # Every warning was on its way at once: the slow channels queued, the banner
                # kept, before the warning's own event was written.
                for w in events[:3]:
                    sent = w["details"]["delivered"]
                    assert sent["queued"] == ["workspace", "webhook", "email"]
                    assert (sent["banner"], sent["terminals"]) == (True, 1)

                wait_for(
                    lambda: _all_told(d, alloc) or None,
                    "every channel's outcome of every notice",
                    30,
                    detail=lambda: str(_events(d, alloc, "notify")),
                )
                assert _delivered(d, alloc) == {
                    c: TOLD for c in ("terminal", "banner", "workspace", "webhook", "email")
                }

                # What each channel carried.
                texts = [b["text"] for b in hook.bodies]
                assert len(texts) == 4 and all(t.startswith(f"ds01 → {alice}:\n") for t in texts)
                assert "ds01 will stop it at" in texts[0], texts[0]
                assert "ds01 stopped your container 'thesis'" in texts[3]
                assert [(to, m["Subject"]) for to, m in inbox.mails] == [
                    ([f"{alice}@lab.example"], "ds01: idle warning")
                ] * 3 + [([f"{alice}@lab.example"], "ds01: idle timeout")]
                note = ws / "ds01-notices.txt"
                st = note.stat()
                assert (st.st_uid, st.st_nlink) == (pwd.getpwnam(alice).pw_uid, 1)
                assert note.read_text().count("--- ds01, ") == 4
                assert "ds01 stopped your container 'thesis'" in note.read_text()
                screen = tty.text()
                assert screen.count("*** ds01: message from ds01d") == 4
                # The banner: once, on stderr, by alice's next command; stdout stays JSON.
                first = d.cli("container", "list", "--json", user=alice)
                assert first.returncode == 0, first.stderr
                assert json.loads(first.stdout)[0]["name"] == "thesis"
                assert first.stderr.count(SIGN) == 4, first.stderr
                assert "ds01 stopped your container 'thesis'" in first.stderr
                assert SIGN not in d.cli("container", "list", user=alice).stderr
                kept = docker_client.containers.get(mine["docker_name"])
                assert (kept.id, kept.status) == (mine["id"], "exited")
    finally:
        tty.close()
        hook.close()


def test_a_dead_webhook_delays_neither_the_stop_nor_the_mail(
    docker_host: str, docker_client: docker.DockerClient, machine: Path, alice: str
) -> None:
    dead = DeadHook()
    try:
        with smtp_server() as (inbox, port):
            # The webhook's timeout outlasts the whole countdown: were the stop waiting on it,
            # the stop would come after the webhook's first failure.
            config = CONFIG.format(idle="10s", url=dead.url, hook_timeout="5m", smtp_port=port)
            with running_daemon(config, docker_host, machine) as d:
                mine = deploy(d, alice, "nap", "--gpus", "1")
                alloc = mine["allocation"]["id"]
                _until_released(d, alloc)
                assert _steps(d, alloc) == [
                    ("idle_warning", "50%"),
                    ("idle_warning", "80%"),
                    ("idle_warning", "warn_before"),
                    ("stopping", "idle_timeout"),
                ]
                assert dead.accepted.is_set()  # the first warning's POST is hanging there
                wait_for(
                    lambda: len(inbox.mails) == 4 or None, "the four mails", 30,
                    detail=lambda: str(_events(d, alloc, "notify")),
                )  # fmt: skip
                outcomes = [
                    (e["details"]["channel"], e["action"]) for e in _events(d, alloc, "notify")
                ]
                assert ("email", "delivered") in outcomes
                assert [o for o in outcomes if o[0] == "webhook"] == []  # still waiting
                assert docker_client.containers.get(mine["docker_name"]).status == "exited"
    finally:
        dead.close()
