"""Estimated start times of queued deploys (issue 16 item 4), from the known ends of what runs
now: each live allocation frees its units at a time ds01 knows (a held allocation's hold end, a
running container's max-runtime or idle stop plus its GPU hold), or at no known time (no limit
applies). Entries are served in priority order; entry k starts once the units free now plus
those released by then cover the units of entries 1..k.

An estimate, and labelled as one: it counts units (a MIG slice counts like a whole GPU), it
assumes nothing new arrives ahead of an entry, and a release at no known time is never counted
(None: unknown). Pure: the caller passes `now` and every input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    at: float  # when its units free up
    units: int


def estimate(
    sizes: Sequence[float], free_now: int, releases: Sequence[Release], now: float
) -> list[float | None]:
    """For each waiting entry (sizes in priority order): when it is expected to start, `now`
    when the free units already cover it and everything ahead, None when no known release
    does."""
    timeline = sorted(releases, key=lambda r: r.at)
    out: list[float | None] = []
    needed = 0.0
    for size in sizes:
        needed += size
        have = float(free_now)
        when: float | None = now if have >= needed else None
        for r in timeline:
            if when is not None:
                break
            have += r.units
            if have >= needed:
                when = max(now, r.at)
        out.append(when)
    return out
