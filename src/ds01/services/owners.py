"""Whose is each engine object: the daemon's one reader and writer of owner records
(store/objects.py). The gate and the container service ask here, never a label.

Unknown objects (no record: made behind ds01's back, by the engine itself, or before ds01
recorded owners) belong to no user: only admins act on them.
"""

from __future__ import annotations

from ds01.store import objects
from ds01.store.db import Database
from ds01.store.objects import ObjectKind

__all__ = ["ObjectKind", "OwnerBook"]


class OwnerBook:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Set once the gate has adopted the labelled volumes and networks of before owner
        # records (gate/policy/volumes_networks.py adopt_labelled): once per daemon.
        self.labelled_adopted = False

    def record(self, kind: ObjectKind, key: str, owner: str, *, origin: str) -> None:
        with self.db.transaction() as conn:
            objects.record(conn, kind, key, owner, origin=origin)

    def adopt(self, kind: ObjectKind, key: str, owner: str, *, origin: str) -> bool:
        with self.db.transaction() as conn:
            return objects.adopt(conn, kind, key, owner, origin=origin)

    def adopt_all(self, found: list[tuple[ObjectKind, str, str]], *, origin: str) -> int:
        """adopt() for each (kind, key, owner), in one transaction; how many were recorded."""
        with self.db.transaction() as conn:
            return sum(objects.adopt(conn, k, key, o, origin=origin) for k, key, o in found)

    def owner(self, kind: ObjectKind, key: str) -> str | None:
        with self.db.transaction(immediate=False) as conn:
            return objects.owner(conn, kind, key)

    def origin(self, kind: ObjectKind, key: str) -> str | None:
        with self.db.transaction(immediate=False) as conn:
            return objects.origin(conn, kind, key)

    def owners(self, kind: ObjectKind, keys: list[str]) -> dict[str, str]:
        with self.db.transaction(immediate=False) as conn:
            return objects.owners(conn, kind, keys)

    def keys_of(self, kind: ObjectKind, owner: str) -> set[str]:
        with self.db.transaction(immediate=False) as conn:
            return objects.keys_of(conn, kind, owner)

    def forget(self, kind: ObjectKind, key: str) -> None:
        with self.db.transaction() as conn:
            objects.forget(conn, kind, key)

    def private_image_of_another(self, image_id: str, user: str) -> bool:
        """The one image rule (gate and deploy): an image a user built, committed, imported or
        loaded is theirs alone; an image with no record (pulled, made by an admin or before ds01
        recorded images) is shared."""
        owner = self.owner(ObjectKind.IMAGE, image_id)
        return owner is not None and owner != user
