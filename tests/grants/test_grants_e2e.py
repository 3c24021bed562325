"""Bare-metal grants end to end: a real ds01d, real users, real terminals (ptys handed to the
user), the real `ds01` command. Durations are seconds; every wait is bounded."""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ds01.api.schemas import EventOut
from ds01.services.grants import HOST_ACCESS_HEADER, HOST_GROUP
from support import Daemon, Users, wait_for

pytestmark = [pytest.mark.root]


CONFIG = """\
admin_group: ds01t-admins
exempt_users: [{exempt}]
gpu:
  sample_interval: 1s
host:
  grant_warnings: {warnings}
  grant_kill_grace: 2s
{extra}"""


class Pty:
    def __init__(self, user: str) -> None:
        self.master, self.slave = os.openpty()
        self.path = Path(os.ttyname(self.slave))
        pw = pwd.getpwnam(user)
        os.chown(self.path, pw.pw_uid, pw.pw_gid)
        os.set_blocking(self.master, False)
        self.seen = ""

    def text(self) -> str:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            self.seen += chunk.decode(errors="replace")
        return self.seen

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def setup(users: Users, daemon_factory: Any) -> Callable[..., tuple[Daemon, str, str]]:
    """A daemon whose config makes one new user exempt; returns (daemon, exempt, other user)."""

    def make(extra: str = "", warnings: str = "[4s, 2s]") -> tuple[Daemon, str, str]:
        exempt, user = users.add(), users.add()
        d: Daemon = daemon_factory(
            CONFIG.format(exempt=exempt, extra=extra, warnings=warnings),
            machine="4xA100-40GB.yaml",
        )
        return d, exempt, user

    return make


def events_of(d: Daemon, kind: str, user: str | None = None) -> list[EventOut]:
    with d.client() as c:
        return c.events(kind=kind, user=user)


def host_access(d: Daemon) -> str:
    return (d.run_dir / "host-access").read_text()


def notes(d: Daemon, user: str) -> list[dict[str, Any]]:
    path = d.state_dir / "notifications.log"
    items = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [i for i in items if i["user"] == user]


def test_grant_lifecycle_warns_on_the_terminal_and_expiry_updates_the_file(
    setup: Callable[..., tuple[Daemon, str, str]],
) -> None:
    d, exempt, user = setup()
    assert host_access(d) == HOST_ACCESS_HEADER + f"{exempt} exempt 0\n"
    assert (d.run_dir / "host-access").stat().st_mode & 0o777 == 0o644
    before = d.cli("access", user=user)
    assert before.returncode == 0, before.stderr
    assert "containers only: use `ds01 container deploy …`" in before.stdout
    tty = Pty(user)
    try:
        r = d.cli("admin", "grant", user, "--for", "7s", "--reason", "nsys profiling")
        assert r.returncode == 0, r.stderr
        assert f"granted {user} bare-metal GPU access until " in r.stdout
        a = json.loads(d.cli("access", "--json", user=user).stdout)
        assert (a["user"], a["state"], a["reason"]) == (user, "granted", "nsys profiling")
        until = int(datetime.fromisoformat(a["until"]).timestamp())
        assert host_access(d) == (HOST_ACCESS_HEADER + f"{exempt} exempt 0\n{user} grant {until}\n")
        human = d.cli("access", user=user).stdout
        assert f"{user}: granted until " in human and "(reason: nsys profiling)" in human

        expired = wait_for(
            lambda: [e for e in events_of(d, "grant", user) if e.action == "expired"],
            "the grant to expire",
            20,
        )
        assert expired[0].details["late_s"] < 60  # "within a minute, not at the next login"
        # The file is rewritten right after the event is recorded: wait for it, not a moment.
        wait_for(
            lambda: host_access(d) == HOST_ACCESS_HEADER + f"{exempt} exempt 0\n",
            "the host-access file to drop the grant",
            10,
            detail=lambda: host_access(d),
        )
        screen = wait_for(
            lambda: tty.text() if "has ended" in tty.text() else None, "the end message", 10
        )
    finally:
        tty.close()
    assert screen.count("Your bare-metal GPU access ends at") == 2
    assert screen.count("*** ds01: message from ds01d at") == 4  # grant, 2 warnings, end
    grant_events = events_of(d, "grant", user)
    assert [(e.action, e.details.get("before_s")) for e in grant_events] == [
        ("granted", None),
        ("warned", 4),
        ("warned", 2),
        ("expired", None),
    ]
    assert [n["topic"] for n in notes(d, user)] == [
        "grant",
        "grant_warning",
        "grant_warning",
        "grant_ended",
    ]
    assert all(n["terminals"] == [str(tty.path)] for n in notes(d, user))
    after = d.cli("access", "--json", user=user)
    assert json.loads(after.stdout)["state"] == "containers_only"
    updates = [e.details["users"] for e in events_of(d, "host") if e.action == "access_updated"]
    assert updates[-2:] == [[exempt, user], [exempt]]


def test_admin_commands_and_their_refusals(
    setup: Callable[..., tuple[Daemon, str, str]],
) -> None:
    d, exempt, user = setup()
    denied = d.cli("admin", "grant", user, "--for", "1h", "--reason", "x", user=user)
    assert denied.returncode == 1
    assert "granting bare-metal GPU access is for admins" in denied.stderr
    unknown = d.cli("admin", "grant", "nosuchuser-ds01", "--for", "1h", "--reason", "x")
    assert unknown.returncode == 2
    assert "no user 'nosuchuser-ds01' on this machine" in unknown.stderr
    both = d.cli("admin", "grant", user, "--for", "1h", "--permanent", "--reason", "x")
    assert both.returncode == 2 and "exactly one of --for" in both.stderr
    bad = d.cli("admin", "grant", user, "--for", "soon", "--reason", "x")
    assert bad.returncode == 2 and "--for: expected a duration" in bad.stderr
    nothing = d.cli("admin", "revoke", user)
    assert nothing.returncode == 1 and f"{user} has no live bare-metal grant" in nothing.stderr

    ok = d.cli("admin", "grant", user, "--permanent", "--reason", "maintainer", "--json")
    assert ok.returncode == 0, ok.stderr
    g = json.loads(ok.stdout)
    assert (g["user"], g["permanent"], g["until"], g["granted_by"]) == (
        user,
        True,
        None,
        "root",
    )
    assert host_access(d).endswith(f"{user} grant 0\n")
    listing = json.loads(d.cli("admin", "grants", "--json").stdout)
    assert [(x["user"], x["kind"], x["until"], x["reason"]) for x in listing] == [
        (exempt, "exempt", None, None),
        (user, "grant", None, "maintainer"),
    ]
    table = d.cli("admin", "grants").stdout
    assert user in table and "maintainer" in table
    assert d.cli("admin", "grants", user=user).returncode == 1

    revoked = d.cli("admin", "revoke", user, "--reason", "left the lab")
    assert revoked.returncode == 0 and f"revoked grant {g['id']} of {user}" in revoked.stdout
    assert host_access(d) == HOST_ACCESS_HEADER + f"{exempt} exempt 0\n"
    ex = json.loads(d.cli("access", "--json", user=exempt).stdout)
    assert (ex["state"], ex["until"]) == ("exempt", None)
    assert "exempt: you may run GPU jobs on the host" in d.cli("access", user=exempt).stdout
    assert [e.action for e in events_of(d, "grant", user)] == ["granted", "revoked"]


def test_a_restart_neither_repeats_nor_drops_warnings(
    setup: Callable[..., tuple[Daemon, str, str]],
) -> None:
    # Wide margins: a restart on a busy machine can take seconds, and a warning whose grant
    # ended meanwhile is replaced by the end message.
    d, _, user = setup(warnings="[12s, 2s]")
    assert d.cli("admin", "grant", user, "--for", "16s", "--reason", "r").returncode == 0
    wait_for(
        lambda: [e for e in events_of(d, "grant", user) if e.action == "warned"],
        "the first warning",
        15,
    )
    d.stop()
    d.start()
    wait_for(
        lambda: [e for e in events_of(d, "grant", user) if e.action == "expired"],
        "the grant to expire",
        20,
    )
    warned = [e.details["before_s"] for e in events_of(d, "grant", user) if e.action == "warned"]
    assert warned == [12, 2]


def test_warnings_missed_while_the_daemon_was_down_are_sent_once_late(
    setup: Callable[..., tuple[Daemon, str, str]],
) -> None:
    d, _, user = setup(warnings="[12s, 8s]")
    r = d.cli("admin", "grant", user, "--for", "16s", "--reason", "r", "--json")
    until = datetime.fromisoformat(json.loads(r.stdout)["until"]).timestamp()
    d.stop()
    # Deliberately down until both marks (12 s, 8 s before the end) have passed.
    time.sleep(max(0.0, until - 7.5 - time.time()))
    d.start()
    wait_for(
        lambda: [e for e in events_of(d, "grant", user) if e.action == "expired"],
        "the grant to expire",
        20,
    )
    warned = [e for e in events_of(d, "grant", user) if e.action == "warned"]
    assert [(e.details["before_s"], e.details["superseded"]) for e in warned] == [(8, [12])]


def test_an_exemption_added_by_a_config_reload_reaches_the_file(
    setup: Callable[..., tuple[Daemon, str, str]],
) -> None:
    d, exempt, user = setup()
    d.write_config(CONFIG.format(exempt=f"{exempt}, {user}", extra="", warnings="[1h]"))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: host_access(d) == HOST_ACCESS_HEADER + f"{exempt} exempt 0\n{user} exempt 0\n",
        "the reloaded exemptions in host-access",
        10,
    )


def test_uvm_gate_keeps_the_host_group_in_step(
    setup: Callable[..., tuple[Daemon, str, str]],
) -> None:
    try:
        grp.getgrnam(HOST_GROUP)
        pytest.skip(f"group {HOST_GROUP} exists on this machine; not touching it")
    except KeyError:
        pass
    try:
        d, exempt, user = setup("  compute_gate: uvm\n")
        assert grp.getgrnam(HOST_GROUP).gr_mem == [exempt]
        assert d.cli("admin", "grant", user, "--for", "3s", "--reason", "r").returncode == 0
        assert sorted(grp.getgrnam(HOST_GROUP).gr_mem) == sorted([exempt, user])

        def added_removed() -> list[tuple[Any, Any]]:
            return [
                (e.details["added"], e.details["removed"])
                for e in events_of(d, "host")
                if e.action == "access_updated"
            ]

        # The group changes first, its audit event follows: wait for both.
        wait_for(
            lambda: grp.getgrnam(HOST_GROUP).gr_mem == [exempt] and len(added_removed()) >= 3,
            f"{user} to leave {HOST_GROUP}, recorded",
            15,
        )
        assert added_removed() == [([exempt], []), ([user], []), ([], [user])]
    finally:
        subprocess.run(["groupdel", HOST_GROUP], capture_output=True)
