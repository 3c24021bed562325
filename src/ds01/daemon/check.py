"""`ds01d --check`: validate the config and the state database, change nothing."""

from __future__ import annotations

import sys

from ds01.config import load_config
from ds01.errors import EXIT_OK, EXIT_USAGE
from ds01.paths import Paths
from ds01.store.allocations import double_allocations
from ds01.store.db import Database


def check(paths: Paths, sim: str | None) -> int:
    config = load_config(paths.config)
    print(f"config ok: {paths.config}")
    if sim is None and config.gpu.backend == "sim" and config.gpu.sim_machine is None:
        print("config: gpu.backend is sim but gpu.sim_machine is not set", file=sys.stderr)
        return EXIT_USAGE
    if not paths.db.exists():
        print(f"state: {paths.db} does not exist yet (created at first start)")
        return EXIT_OK
    db = Database(paths.db, create=False)
    try:
        problems = db.integrity_check()
        doubles = double_allocations(db.conn)
    finally:
        db.close()
    if problems:
        print(f"state: integrity check failed: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_USAGE
    if doubles:
        print(f"state: units in two live allocations: {', '.join(doubles)}", file=sys.stderr)
        return EXIT_USAGE
    print(f"state ok: {paths.db}")
    return EXIT_OK
