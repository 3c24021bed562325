"""Intent records: what a multi-step container operation set out to do, so that a ds01d that
died half-way through it (or lost Docker half-way) can finish or undo it later (issue 10 §2).

An intent is written in the same transaction that reserves the operation's units, so there is
never a reservation for a deploy without its intent, nor an intent without its reservation; it
is deleted in the transaction that activates or releases that allocation. While one is open,
reservation expiry leaves its allocation alone: only recovery (services/recovery.py), which can
see the containers, may decide what the reservation's units are for.

op         docker_name                  container_id           new_name
---------  ---------------------------  ---------------------  ---------------------------
deploy     the container's name         -                      -
start      -                            the container started  -
recreate   the old container's name     the old container      the new container's name
create     -                            -                      -   (the gate: found by label)

Must not talk to the engine; callers hold the transaction.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from enum import StrEnum

# This ds01d process. An intent written by another process (one that died) has nobody working on
# it: recovery may finish or undo it. One written by this process belongs to the operation
# running it, unless that operation gave up on it (services/recovery.py).
PROCESS = uuid.uuid4().hex


class IntentOp(StrEnum):
    DEPLOY = "deploy"
    START = "start"
    RECREATE = "recreate"
    CREATE = "create"


@dataclass(frozen=True)
class Intent:
    op: IntentOp
    user: str
    docker_name: str | None = None
    container_id: str | None = None
    new_name: str | None = None


@dataclass(frozen=True)
class IntentRow:
    allocation_id: int
    intent: Intent
    process: str
    created_at: float


_COLUMNS = "allocation_id, op, user, docker_name, container_id, new_name, process, created_at"


def open_intent(conn: sqlite3.Connection, allocation_id: int, intent: Intent, now: float) -> None:
    conn.execute(
        f"INSERT INTO intents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            allocation_id,
            intent.op.value,
            intent.user,
            intent.docker_name,
            intent.container_id,
            intent.new_name,
            PROCESS,
            now,
        ),
    )


def replace(conn: sqlite3.Connection, allocation_id: int, intent: Intent) -> None:
    """The operation changed course (a start that must recreate its container)."""
    conn.execute(
        "UPDATE intents SET op = ?, user = ?, docker_name = ?, container_id = ?, new_name = ?"
        " WHERE allocation_id = ?",
        (
            intent.op.value,
            intent.user,
            intent.docker_name,
            intent.container_id,
            intent.new_name,
            allocation_id,
        ),
    )


def close(conn: sqlite3.Connection, allocation_id: int) -> None:
    conn.execute("DELETE FROM intents WHERE allocation_id = ?", (allocation_id,))


def get(conn: sqlite3.Connection, allocation_id: int) -> IntentRow | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM intents WHERE allocation_id = ?", (allocation_id,)
    ).fetchone()
    return _row(row) if row is not None else None


def all_open(conn: sqlite3.Connection) -> list[IntentRow]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM intents ORDER BY allocation_id")]


def _row(r: tuple[object, ...]) -> IntentRow:
    return IntentRow(
        allocation_id=int(str(r[0])),
        intent=Intent(
            op=IntentOp(str(r[1])),
            user=str(r[2]),
            docker_name=None if r[3] is None else str(r[3]),
            container_id=None if r[4] is None else str(r[4]),
            new_name=None if r[5] is None else str(r[5]),
        ),
        process=str(r[6]),
        created_at=float(str(r[7])),
    )
