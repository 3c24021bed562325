"""The kinds of audit events (the log itself is store/events.py)."""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    """What an event is about; `ds01 events --kind` takes exactly these."""

    ALLOC = "alloc"  # allocations: reserved, activated, held, released, refused
    UNIT = "unit"  # the inventory: units added, gone, back
    ADMIN = "admin"  # drains
    CONTAINER = "container"  # removed, stopped, orphans
    GATE = "gate"  # the Docker gate's refusals
    GRANT = "grant"  # bare-metal grants
    HOST = "host"  # the host: device nodes, host GPU processes
    DAEMON = "daemon"  # ds01d itself: clock steps, broken invariants
    NOTIFY = "notify"  # notices to users: delivered, failed or skipped, per channel
    QUEUE = "queue"  # the queue: queued, admitting, admitted, cancelled, expired, failed
