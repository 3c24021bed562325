"""Allocation states and the one table of allowed transitions (BRIEF §4).

reserved → active (bound to a container) → held (container stopped) → released.
The store refuses any transition that is not in TRANSITIONS.
"""

from __future__ import annotations

from enum import StrEnum


class AllocState(StrEnum):
    RESERVED = "reserved"
    ACTIVE = "active"
    HELD = "held"
    RELEASED = "released"


LIVE_STATES: frozenset[AllocState] = frozenset(
    {AllocState.RESERVED, AllocState.ACTIVE, AllocState.HELD}
)

TRANSITIONS: frozenset[tuple[AllocState, AllocState]] = frozenset(
    {
        (AllocState.RESERVED, AllocState.ACTIVE),
        (AllocState.RESERVED, AllocState.RELEASED),
        (AllocState.ACTIVE, AllocState.HELD),
        (AllocState.ACTIVE, AllocState.RELEASED),
        (AllocState.HELD, AllocState.ACTIVE),
        (AllocState.HELD, AllocState.RELEASED),
    }
)


def can_transition(src: AllocState, dst: AllocState) -> bool:
    return (src, dst) in TRANSITIONS
