"""Checks of what ds01d reads: the config and the state database.

    config.valid      the config file loads (the same loader ds01d uses); problems are listed
    state.integrity   SQLite's integrity_check on the state database, opened read-only

The database is checked read-only (store.db.read_only_check, the check ds01d makes at start),
not through store.Database, whose constructor migrates and takes the write lock: a doctor must
never change the state it inspects, nor block the running daemon. Nothing here repairs anything.
"""

from __future__ import annotations

import sqlite3

from ds01.host.doctor.base import Context, Result, Status
from ds01.store.db import read_only_check


def check_config_valid(ctx: Context) -> Result:
    rid = "config.valid"
    if ctx.config is None:
        problems = ctx.config_error or ["unknown error"]
        return Result(
            rid,
            Status.FAIL,
            f"the config {ctx.paths.config} is invalid; host checks that need it are skipped",
            problems,
            "Fix it (`ds01 config check` lists every problem with file:line).",
        )
    config = ctx.config
    users = len(config.named_users())
    return Result(
        rid,
        Status.PASS,
        f"{ctx.paths.config} is valid ({len(config.groups)} groups, {users} users, "
        f"{len(config.exempt_users)} exempt)",
        [
            f"host.device_access: {config.host.device_access}",
            f"host.compute_gate: {config.host.compute_gate}",
            f"host.gate_group: {config.host.gate_group}",
        ],
    )


def check_state_integrity(ctx: Context) -> Result:
    rid = "state.integrity"
    db = ctx.at(ctx.paths.db)
    if not db.exists():
        return Result(
            rid,
            Status.WARN,
            f"no state database at {ctx.paths.db} (ds01d has not run yet?)",
            fix="Start ds01d once; it creates the database.",
        )
    try:
        rows = read_only_check(db)
    except sqlite3.Error as err:
        return Result(
            rid,
            Status.FAIL,
            f"the state database {ctx.paths.db} cannot be read: {err}",
            fix="Stop ds01d, keep a copy of the file, and restore the latest backup.",
        )
    if rows == ["ok"]:
        return Result(rid, Status.PASS, f"{ctx.paths.db}: integrity ok (read-only check)")
    return Result(
        rid,
        Status.FAIL,
        f"the state database {ctx.paths.db} is damaged",
        rows[:10],
        "Stop ds01d, keep a copy of the file, and restore the latest backup "
        "(sqlite3 FILE '.recover' can salvage rows).",
    )
