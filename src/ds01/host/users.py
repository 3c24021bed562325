"""Who the ds01 users are on this host, and which of ds01's groups each one is missing from.

ds01 users = the users the config names (`users:` keys, group `members` and `exempt_users`) plus
the members of every config group's `unix_group` (supplementary members from NSS, and users whose
primary group it is, as far as NSS can enumerate them). Names come from the config and NSS only;
root is never a ds01 user. Read-only: this module looks accounts up and proposes commands; it
never runs them (apply and doctor do, and only on the live root).
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

from ds01.config import Config
from ds01.identity import unix_groups


@dataclass(frozen=True)
class Ds01Users:
    present: tuple[str, ...]  # known to NSS, in config order then group order
    unknown: tuple[str, ...]  # named in the config but unknown to NSS (skipped)


def ds01_users(config: Config) -> Ds01Users:
    names: dict[str, None] = dict.fromkeys(config.named_users())
    # Exempt users compute on the host, which needs the query nodes too (device_access: group).
    names.update(dict.fromkeys(config.exempt_users))
    primary: dict[int, list[str]] | None = None
    for spec in config.groups.values():
        if spec.unix_group is None:
            continue
        try:
            entry = grp.getgrnam(spec.unix_group)
        except KeyError:
            continue
        names.update(dict.fromkeys(entry.gr_mem))
        if primary is None:
            primary = {}
            for pw in pwd.getpwall():
                primary.setdefault(pw.pw_gid, []).append(pw.pw_name)
        names.update(dict.fromkeys(primary.get(entry.gr_gid, [])))
    present: list[str] = []
    unknown: list[str] = []
    for name in names:
        if name == "root":
            continue
        (present if user_exists(name) else unknown).append(name)
    return Ds01Users(tuple(present), tuple(unknown))


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def group_exists(name: str) -> bool:
    return group_id(name) is not None


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def missing_from(group: str, users: tuple[str, ...]) -> list[str]:
    """The users (of `users`) that are not in `group`."""
    return [u for u in users if group not in unix_groups(u)]


def add_member_command(user: str, group: str) -> list[str]:
    return ["gpasswd", "--add", user, group]


def create_group_command(group: str) -> list[str]:
    return ["groupadd", "--system", group]
