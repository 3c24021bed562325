"""Banners end to end: a real ds01d, real users, the real `ds01` command. A notice ds01d keeps
for a user (here: the admin's grant) is printed once, on stderr, by that user's next `ds01`
command — quick path or long way, with --json stdout still pure JSON — and never by anyone
else's, nor taken by a client that did not ask for it."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from support import BIN, Daemon, Users, as_user

pytestmark = [pytest.mark.root]

CONFIG = """\
admin_group: ds01t-admins
gpu:
  sample_interval: 1s
notify:
  channels: [terminal, banner]
"""
SIGN = "*** ds01 notice ("
# A client that does not ask for notices (a script on the API): it must take none.
PLAIN_CLIENT = (
    "import sys; from ds01.unixhttp import get_json; "
    "sys.exit(0 if get_json(sys.argv[1], '/v1/quota') is not None else 3)"
)


def _notify_events(d: Daemon, user: str) -> list[tuple[str, str, str]]:
    with d.client() as c:
        return [
            (e.action, e.reason, e.details["channel"]) for e in c.events(kind="notify", user=user)
        ]


def test_a_banner_is_printed_once_by_the_users_next_command_and_by_no_one_elses(
    users: Users, daemon_factory: Any
) -> None:
    alice, bob = users.add(), users.add()
    d: Daemon = daemon_factory(CONFIG, machine="4xA100-40GB.yaml")
    r = d.cli("admin", "grant", alice, "--for", "3h", "--reason", "profiling")
    assert r.returncode == 0, r.stderr
    assert _notify_events(d, alice) == [
        ("skipped", "grant", "terminal"),
        ("delivered", "grant", "banner"),
    ]

    plain = as_user(alice, [sys.executable, "-c", PLAIN_CLIENT, str(d.socket)], env=d.env)
    assert plain.returncode == 0, plain.stderr
    other = d.cli("quota", user=bob)
    assert other.returncode == 0 and SIGN not in other.stderr, other.stderr

    first = d.cli("quota", "--json", user=alice)  # the quick path
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["user"] == alice  # stdout is the JSON alone
    assert first.stderr.startswith(SIGN), first.stderr
    assert "granted you bare-metal GPU access" in first.stderr
    assert "(reason: profiling)" in first.stderr
    again = d.cli("quota", "--json", user=alice)
    assert again.returncode == 0 and again.stderr == "", again.stderr

    r = d.cli("admin", "revoke", alice, "--reason", "done")
    assert r.returncode == 0, r.stderr
    long_way = as_user(alice, [str(BIN / "ds01"), "quota"], env={**d.env, "DS01_QUICK": "0"})
    assert long_way.returncode == 0, long_way.stderr
    assert long_way.stderr.count(SIGN) == 1, long_way.stderr
    assert "revoked your bare-metal GPU access" in long_way.stderr
    assert SIGN not in long_way.stdout
    assert SIGN not in d.cli("quota", user=alice).stderr
    assert SIGN not in d.cli("quota", user=bob).stderr
