"""Banner notices (notify.channels: banner): kept in the database until the user's next `ds01`
command takes them (api/server.py hands them out in a response header, notices.py).

Owns the cheap check that keeps every other request cheap: the set of users with notices
waiting lives in memory (loaded at start, kept with every post and take), so a request of a
user with nothing waiting costs one set lookup and no database access. Taking is one
transaction (read and delete), so two commands run at once never both show a notice. Must not
decide who the caller is (the API's SO_PEERCRED identity does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ds01.notices import MAX_HEADER_BYTES, encode
from ds01.store import banners as store
from ds01.store.db import Database


class BannerBox:
    def __init__(
        self,
        db: Database,
        max_age_s: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        with db.transaction() as conn:
            store.expire(conn, clock() - max_age_s())
            self._waiting = store.pending_users(conn)

    def post(self, user: str, topic: str, message: str, ts: float) -> None:
        """Keep a notice for the user's next command (the notifier's banner channel)."""
        with self.db.transaction() as conn:
            store.add(conn, user, topic, message, ts)
        with self._lock:
            self._waiting.add(user)

    def waiting(self, user: str) -> bool:
        with self._lock:
            return user in self._waiting

    def take(self, user: str, budget: int = MAX_HEADER_BYTES) -> list[dict[str, Any]]:
        """The user's notices, oldest first, as many as fit in `budget` bytes once encoded;
        those returned are gone (shown once), the rest wait for the next command. Notices
        older than notify.banner.max_age are dropped unseen."""
        now = self._clock()
        with self.db.transaction() as conn:
            store.expire(conn, now - self._max_age_s())
            chosen: list[dict[str, Any]] = []
            ids: list[int] = []
            rest = store.pending(conn, user)
            for b in rest:
                item = {"ts": b.created_at, "topic": b.topic, "message": b.message}
                if len(encode([*chosen, item])) > budget:
                    break
                chosen.append(item)
                ids.append(b.id)
            store.remove(conn, ids)
            left = len(rest) > len(ids)
        if not left:
            with self._lock:
                self._waiting.discard(user)
        return chosen
