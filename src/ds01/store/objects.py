"""Owner records of engine objects: who made each container, volume, network and image tag.

ds01 writes a record when it (the gate or `ds01 container deploy`) creates the object, keyed by
what the engine cannot change behind ds01's back: a container's or network's full ID, a volume's
name, a tag's normalised `repo:tag`. Labels on those objects are a display copy a user can forge
(an image `LABEL`, a legacy build step); ownership is read from here only.

kind   key                         origin
-----  --------------------------  ------------------------------------------------------
container  full 64-hex ID          gate | deploy | adopted (from an allocation row at upgrade)
volume     name                    gate | adopted
network    full ID                 gate | adopted
tag        repo:tag (normalised)   build | tag | commit | pull | import | load | shared
image      sha256:… image ID       build | commit | import | load (made by that user)

Must not talk to the engine; callers hold the transaction.
"""

from __future__ import annotations

import sqlite3
import time
from enum import StrEnum


class ObjectKind(StrEnum):
    CONTAINER = "container"
    VOLUME = "volume"
    NETWORK = "network"
    TAG = "tag"
    IMAGE = "image"


def record(
    conn: sqlite3.Connection, kind: ObjectKind, key: str, owner: str, *, origin: str
) -> None:
    """Record (or re-record) `owner` as the owner of an object ds01 just made."""
    conn.execute(
        "INSERT INTO objects (kind, key, owner, origin, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET owner = excluded.owner, "
        "origin = excluded.origin, created_at = excluded.created_at",
        (kind.value, key, owner, origin, time.time()),
    )


def adopt(conn: sqlite3.Connection, kind: ObjectKind, key: str, owner: str, *, origin: str) -> bool:
    """Record an owner only where none is recorded yet; True when a record was made."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO objects (kind, key, owner, origin, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (kind.value, key, owner, origin, time.time()),
    )
    return cur.rowcount > 0


def owner(conn: sqlite3.Connection, kind: ObjectKind, key: str) -> str | None:
    row = conn.execute(
        "SELECT owner FROM objects WHERE kind = ? AND key = ?", (kind.value, key)
    ).fetchone()
    return str(row[0]) if row is not None else None


def origin(conn: sqlite3.Connection, kind: ObjectKind, key: str) -> str | None:
    row = conn.execute(
        "SELECT origin FROM objects WHERE kind = ? AND key = ?", (kind.value, key)
    ).fetchone()
    return str(row[0]) if row is not None else None


def owners(conn: sqlite3.Connection, kind: ObjectKind, keys: list[str]) -> dict[str, str]:
    """key → owner for those of `keys` that have a record."""
    out: dict[str, str] = {}
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        marks = ",".join("?" * len(part))
        for row in conn.execute(
            f"SELECT key, owner FROM objects WHERE kind = ? AND key IN ({marks})",
            (kind.value, *part),
        ):
            out[str(row[0])] = str(row[1])
    return out


def keys_of(conn: sqlite3.Connection, kind: ObjectKind, owner_name: str) -> set[str]:
    return {
        str(r[0])
        for r in conn.execute(
            "SELECT key FROM objects WHERE kind = ? AND owner = ?", (kind.value, owner_name)
        )
    }


def forget(conn: sqlite3.Connection, kind: ObjectKind, key: str) -> None:
    conn.execute("DELETE FROM objects WHERE kind = ? AND key = ?", (kind.value, key))
