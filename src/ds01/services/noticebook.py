"""The audit trail of notices (notify/): each channel's outcome for each notice is one event
of kind `notify` — action `delivered`, `failed` or `skipped`, reason the notice's topic
(`idle_warning`, `idle_timeout`, …), details the channel, where it went or why not, and how
long it took. `ds01 events --kind notify` shows them; a user sees their own.

Must not say more than the user may see about the channel itself: the notifier's details
never hold a webhook's URL path nor a password.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ds01.notify import Outcome
from ds01.store import events
from ds01.store.db import Database

DAEMON = "ds01d"


class NoticeBook:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def record(self, outcomes: list[Outcome]) -> None:
        """The outcomes of one notice (or of one slow channel), in one transaction."""
        with self.db.transaction() as conn:
            for o in outcomes:
                events.record(
                    conn,
                    kind="notify",
                    action=o.status,
                    reason=o.topic,
                    actor=DAEMON,
                    user=o.user,
                    allocation_id=o.allocation_id,
                    message=f"{o.topic} via {o.channel}: {o.status} ({o.detail})",
                    details={
                        "channel": o.channel,
                        "detail": o.detail,
                        "seconds": round(o.seconds, 3),
                        "notice_ts": o.ts,
                    },
                    ts=self._clock(),
                )
