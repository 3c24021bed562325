"""Counters from the audit log: how many events of each (kind, action, reason) it holds.

The events table is append-only and never pruned, so its counts are totals that survive a
restart of ds01d: after a restart a counter continues from the same value instead of starting
at zero (Prometheus copes with resets anyway: a restore from an older backup is one). Each
scrape reads only the events written since the previous one, by the primary key, in ranges of
CHUNK ids, each in its own short read transaction: the first scrape after a start counts the
whole log without holding the database for long.

Ids are assigned by SQLite's single writer inside its transaction and grow: once a read sees
id N, every event not yet seen has an id above N (a rolled-back id is given again, still
above N).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType

from ds01.store import events
from ds01.store.db import Database

Key = tuple[str, str, str]  # (kind, action, reason)
CHUNK = 20_000


class EventTally:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()  # two scrapes at once: one counts, the other waits
        self._seen = 0
        self._counts: dict[Key, int] = {}

    def counts(self) -> Mapping[Key, int]:
        """Every (kind, action, reason) the log holds, with its number of events, now."""
        with self._lock:
            with self._db.transaction(immediate=False) as conn:
                top = events.last_id(conn)
            if top < self._seen:  # the log was replaced by an older one (a restore): recount
                self._seen, self._counts = 0, {}
            while self._seen < top:
                upto = min(top, self._seen + CHUNK)
                with self._db.transaction(immediate=False) as conn:
                    found = events.tally_after(conn, self._seen, upto)
                for kind, action, reason, n in found:
                    key = (kind, action, reason)
                    self._counts[key] = self._counts.get(key, 0) + n
                self._seen = upto
            return MappingProxyType(dict(self._counts))
