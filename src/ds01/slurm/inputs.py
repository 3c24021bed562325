"""What the policy is built from besides ds01.yaml: each node's inventory and NSS's members.

Reads each node's machine file (docs/inventory.md; a shipped name or a path relative to the
config file) and, for every group with a `unix_group`, the users NSS puts in it (listed members
and users whose primary group it is), first group in file order winning as in
docs/config.md "Which group a user is in"; users the file places itself are left out. Must not
write anything.
"""

from __future__ import annotations

import grp
import pwd
from pathlib import Path

from ds01.config import Config
from ds01.inventory.sim import load_machine, resolve_machine
from ds01.model.inventory import MachineSample


def node_machines(config: Config) -> dict[str, MachineSample]:
    base = Path(config.source).parent if config.source else None
    return {
        name: load_machine(resolve_machine(spec.machine, base))
        for name, spec in config.cluster.nodes.items()
    }


def nss_members(config: Config) -> dict[str, list[str]]:
    wanted = {name: g.unix_group for name, g in config.groups.items() if g.unix_group}
    if not wanted:
        return {}
    by_gid: dict[int, list[str]] = {}
    for account in pwd.getpwall():
        by_gid.setdefault(account.pw_gid, []).append(account.pw_name)
    # Users the file places itself (users.<n>.group, members) are not NSS's to place.
    placed = {u for u in config.named_users() if config.group_of(u) is not None}
    out: dict[str, list[str]] = {}
    for group, unix_group in wanted.items():
        try:
            entry = grp.getgrnam(unix_group)
        except KeyError:
            continue
        users = [*entry.gr_mem, *by_gid.get(entry.gr_gid, [])]
        mine = [u for u in dict.fromkeys(users) if u not in placed]
        placed.update(mine)
        if mine:
            out[group] = mine
    return out
