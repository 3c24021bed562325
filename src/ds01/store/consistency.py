"""The state invariants the database alone can prove (docs/allocation.md, "Invariants"):

I1  a unit is in at most one live allocation (also enforced by the partial unique index; this
    scan does not rely on it);
I3  no reservation outlives its timeout unless an operation is still finishing or undoing it
    (an open intent, store/intents.py);
I5  the audit log records what happened: each allocation's newest `alloc` event is the move to
    its present state.

I2 and I4 need the engine and are kept by reconcile (services/reconcile.py). ds01d checks these
at start and after every reconcile pass; `ds01d --check` checks them on a read-only file.
Reads only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ds01.store.allocations import double_allocations

# What the newest alloc event of an allocation in each state must be.
EVENT_OF_STATE = {
    "reserved": "reserved",
    "active": "activated",
    "held": "held",
    "released": "released",
}
# Expiry runs every second; a reservation this far past its timeout was missed, not pending.
EXPIRY_SLACK_S = 60.0


@dataclass(frozen=True)
class Problem:
    invariant: str  # I1, I3, I5
    message: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.message}"


def check(conn: sqlite3.Connection, now: float, *, all_allocations: bool = False) -> list[Problem]:
    """The problems found; empty when the state is sound. Live allocations only, unless
    `all_allocations` (ds01d --check reads the whole history)."""
    out = [
        Problem("I1", f"unit {u} is in more than one live allocation")
        for u in double_allocations(conn)
    ]
    for alloc_id, expires_at in conn.execute(
        "SELECT id, expires_at FROM allocations WHERE state = 'reserved' AND expires_at < ?"
        " AND id NOT IN (SELECT allocation_id FROM intents)",
        (now - EXPIRY_SLACK_S,),
    ):
        late = int(now - float(expires_at))
        what = f"allocation {alloc_id} is still reserved {late}s past its timeout"
        out.append(Problem("I3", what))
    where = "" if all_allocations else "WHERE a.state != 'released'"
    rows = conn.execute(
        "SELECT a.id, a.state, (SELECT e.action FROM events e WHERE e.allocation_id = a.id"
        f" AND e.kind = 'alloc' ORDER BY e.id DESC LIMIT 1) FROM allocations a {where}"
    )
    for alloc_id, state, action in rows:
        if action != EVENT_OF_STATE.get(str(state)):
            said = f"'{action}'" if action else "no event"
            what = f"allocation {alloc_id} is {state} but its audit log ends with {said}"
            out.append(Problem("I5", what))
    return out
