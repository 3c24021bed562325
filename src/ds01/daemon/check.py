"""`ds01d --check`: validate the config and the state database, change nothing (the database
is opened read-only and never migrated)."""

from __future__ import annotations

import sqlite3
import sys
import time

from ds01.config import load_config
from ds01.errors import EXIT_OK, EXIT_USAGE, StateError
from ds01.paths import Paths
from ds01.store import consistency
from ds01.store.allocations import double_allocations
from ds01.store.db import Database, verify_state_file
from ds01.store.migrations import MIGRATIONS, schema_version


def check(paths: Paths, sim: str | None) -> int:
    config = load_config(paths.config)
    print(f"config ok: {paths.config}")
    if sim is None and config.gpu.backend == "sim" and config.gpu.sim_machine is None:
        print("config: gpu.backend is sim but gpu.sim_machine is not set", file=sys.stderr)
        return EXIT_USAGE
    if not paths.db.exists():
        print(f"state: {paths.db} does not exist yet (created at first start)")
        return EXIT_OK
    try:
        verify_state_file(paths.db)
        db = Database(paths.db, read_only=True)
    except StateError as err:
        print(f"state: {err.what}", file=sys.stderr)
        return EXIT_USAGE
    try:
        problems = db.integrity_check()
        version = schema_version(db.conn)
        if problems or version < 1:
            broken: list[str] = []
        elif version >= 5:
            broken = [str(p) for p in consistency.check(db.conn, time.time(), all_allocations=True)]
        else:  # I1 only: the rest needs the intents table (migrated at the next start)
            broken = [
                f"I1: unit {u} is in more than one live allocation"
                for u in double_allocations(db.conn)
            ]
    except sqlite3.Error as err:
        print(f"state: {paths.db} cannot be read: {err}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    if problems:
        print(f"state: integrity check failed: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_USAGE
    latest = max(v for v, _, _ in MIGRATIONS)
    if version < latest:
        print(f"state: schema version {version}; ds01d migrates it to {latest} at its next start")
    if broken:
        for line in broken:
            print(f"state: invariant {line}", file=sys.stderr)
        return EXIT_USAGE
    print(f"state ok: {paths.db}")
    return EXIT_OK
