"""identity.CallerCache, the one caller cache of api.sock and the gate, over real NSS (users made
with useradd): a caller keeps the name and groups it had when looked up for `ttl` seconds,
with each connection's own pid; an unknown uid is refused, every time it is asked for; and the
one admin rule (identity.is_admin) counts root and the config's admins.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess

import pytest

from ds01.config import parse_config_text
from ds01.errors import PermissionDenied
from ds01.identity import Caller, CallerCache, is_admin
from ds01.services.invariants import owner_gids
from support import Users

pytestmark = pytest.mark.root


def _unused_uid() -> int:
    taken = {p.pw_uid for p in pwd.getpwall()}
    return next(uid for uid in range(61000, 65000) if uid not in taken)


def test_a_caller_is_kept_for_the_ttl_with_each_connections_pid(users: Users) -> None:
    name = users.add()
    pw = pwd.getpwnam(name)
    group = users.group(f"{name}g")

    async def scenario() -> tuple[Caller, Caller, Caller]:
        kept, fresh = CallerCache(ttl=3600), CallerCache(ttl=0)
        try:
            first = await kept.get(101, pw.pw_uid, pw.pw_gid)
            subprocess.run(["gpasswd", "-a", name, group], check=True, capture_output=True)
            again = await kept.get(202, pw.pw_uid, pw.pw_gid)
            now = await fresh.get(303, pw.pw_uid, pw.pw_gid)
        finally:
            kept.close()
            fresh.close()
        return first, again, now

    first, again, now = asyncio.run(scenario())
    assert (first.name, first.pid, group in first.groups) == (name, 101, False)
    assert (again.name, again.pid, again.groups) == (name, 202, first.groups)
    assert (now.pid, group in now.groups) == (303, True)


def test_an_unknown_uid_is_refused_each_time() -> None:
    uid = _unused_uid()

    async def scenario() -> list[str]:
        cache = CallerCache()
        whats = []
        try:
            for pid in (1, 2):
                with pytest.raises(PermissionDenied) as err:
                    await cache.get(pid, uid, uid)
                whats.append(err.value.what)
        finally:
            cache.close()
        return whats

    assert asyncio.run(scenario()) == [f"uid {uid} has no user name"] * 2


CONFIG = """\
admin_group: ds01t-admins
groups:
  ds01t-admins:
    members: [placed]
"""


@pytest.mark.parametrize(
    ("caller", "admin"),
    [
        pytest.param(Caller(0, 0, 1, "root", frozenset()), True, id="root is an admin"),
        pytest.param(
            Caller(1000, 1000, 1, "placed", frozenset()),
            True,
            id="a user the config places in the admin group is an admin",
        ),
        pytest.param(
            Caller(1001, 1001, 1, "member", frozenset({"ds01t-admins"})),
            True,
            id="a member of the Unix admin group is an admin",
        ),
        pytest.param(
            Caller(1002, 1002, 1, "other", frozenset({"users"})), False, id="anyone else is not"
        ),
    ],
)
def test_the_admin_rule(caller: Caller, admin: bool) -> None:
    assert is_admin(caller, parse_config_text(CONFIG, "test.yaml")) is admin


def test_an_owner_by_name_is_kept_for_the_ttl_and_an_unknown_one_has_no_groups(
    users: Users,
) -> None:
    """CallerCache.of_name, the lifecycle's lookup of allocation owners: NSS once per user
    per ttl (a group added meanwhile shows only after it), and an account NSS does not know
    is a caller without groups — judged on the defaults, not skipped."""
    name = users.add()
    group = users.group(f"{name}g")
    kept, fresh = CallerCache(ttl=3600), CallerCache(ttl=0)
    try:
        first = kept.of_name(name)
        subprocess.run(["gpasswd", "-a", name, group], check=True, capture_output=True)
        again = kept.of_name(name)
        now = fresh.of_name(name)
        gone = kept.of_name("ds01t-no-such-user")
    finally:
        kept.close()
        fresh.close()
    assert (first.name, first.uid, group in first.groups) == (
        name,
        pwd.getpwnam(name).pw_uid,
        False,
    )
    assert again.groups == first.groups
    assert group in now.groups
    assert (gone.name, gone.uid, gone.groups) == ("ds01t-no-such-user", -1, frozenset())


def test_a_caller_carries_its_group_ids_and_a_container_is_judged_on_them(users: Users) -> None:
    """The group IDs come with the same NSS answer as the names (primary and supplementary),
    and the invariant checker's owner_gids uses them: judging a container asks NSS nothing
    more. A caller without them (made by hand) is asked for then."""
    group = users.group(f"ds01t{os.getpid() % 10000}g")
    name = users.add(groups=(group,))
    pw = pwd.getpwnam(name)
    expected = frozenset({pw.pw_gid, grp.getgrnam(group).gr_gid})
    caller = CallerCache(ttl=0).of_name(name)
    assert (caller.gids, caller.groups) == (expected, frozenset({name, group}))
    assert owner_gids(caller) == expected
    # The ids it carries are the ones used: 4242 is in no group NSS knows for this account.
    carried = Caller(
        uid=pw.pw_uid, gid=pw.pw_gid, pid=0, name=name, groups=frozenset(), gids=frozenset({4242})
    )
    assert owner_gids(carried) == frozenset({4242, pw.pw_gid})
    by_hand = Caller(uid=pw.pw_uid, gid=pw.pw_gid, pid=0, name=name, groups=frozenset())
    assert owner_gids(by_hand) == expected
