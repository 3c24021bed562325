"""SQLite state: the single source of truth for units, allocations and the audit log.

Only the daemon writes here. Double allocation is impossible by construction: a partial unique
index allows each unit in at most one live allocation.
"""

from ds01.store.db import Database

__all__ = ["Database"]
