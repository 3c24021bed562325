"""Test-only fault points: make ds01d die at one named step of an operation, as `kill -9` would.

`DS01_FAULT=deploy.created` in ds01d's environment makes the process exit at once (no cleanup,
no `finally`, status 137) the first time the deploy passes the point named `deploy.created`,
i.e. right after that step's side effect. The crash tests drive every operation through every
point and then check that a restarted ds01d restores the invariants (docs/allocation.md).

Only root sets ds01d's environment, so the variable gives local users nothing; unset, a point is
a point costs one comparison.
"""

from __future__ import annotations

import os
import sys

ENV = "DS01_FAULT"
EXIT_STATUS = 137  # what a shell reports for kill -9

# Every point, per operation, in the order the operation passes them: the crash tests iterate
# over this table, so a new step with a side effect is added here and is tested at once.
POINTS: dict[str, tuple[str, ...]] = {
    "deploy": ("reserved", "created", "started", "activated"),
    "start": ("reserved", "started", "activated"),
    "recreate": ("reserved", "snapshot", "created", "old_removed", "renamed", "started"),
    "stop": ("stopped", "held"),
    # ds01d's own stop of an idle or over-runtime container (lifecycle/reclaim.py): the
    # 'stopping' event written, the engine stopped it, the allocation held.
    "lifecycle_stop": ("announced", "stopped", "held"),
    "retire": ("removed", "released"),
    # The Docker gate: the engine answered the create, the owner record was written; a start
    # that allocated again, before and after the engine started the container.
    "gate_create": ("answered", "recorded"),
    "gate_start": ("reserved", "started"),
    # The queue's dispatcher (services/queue.py): the entry marked admitting (committed), then
    # its deploy done, before the entry is marked admitted.
    "queue": ("admitting", "deployed"),
    # A docker create the gate holds open (services/gatequeue.py): its units reserved with the
    # create intent, not yet handed to its waiting client.
    "queue_gate": ("reserved",),
}

_armed = os.environ.get(ENV, "")


def point(name: str) -> None:
    """Die here when DS01_FAULT names this point (`<operation>.<step>`)."""
    if _armed and name == _armed:
        sys.stderr.write(f"ds01d: fault point {name} reached ({ENV}); exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_STATUS)
