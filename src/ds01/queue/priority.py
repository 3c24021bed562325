"""Priority of a queued deploy request (issue 16 item 2): a weighted sum of four factors, each
between 0 and 1, with the weights from the config (queue.weights):

- fair share = 2^(-U / usage_scale), U the user's GPU usage in gpueq·seconds decayed with a
  half-life (like SLURM's decayed usage): a second of use `a` seconds ago counts 2^(-a / H).
  No recent use → 1; one usage_scale of decayed use → 1/2; it recovers as the use ages.
- age = seconds in the queue / age_max, at most 1: waiting long enough always wins in the end.
- group = queue.group_priority of the user's group (0 for groups not named).
- size = 1 / units asked for: smaller requests fit into more gaps.

The entry penalty: an admitted request counts as `entry_penalty` seconds of use at its size the
moment it is admitted (Usage.penalty), so a user with a burst of queued requests drops behind
others after their first admission instead of riding usage figures that lag behind.

Pure: no clock, database or config reads; callers pass `now` and every input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """One allocation's use: `gpueq` held from `start` to `end` (None: still held), plus the
    admission penalty (gpueq × entry_penalty seconds, charged at `start`)."""

    user: str
    gpueq: float
    start: float
    end: float | None
    penalty: float = 0.0  # gpueq·seconds


@dataclass(frozen=True)
class Weights:
    fairshare: float
    age: float
    group: float
    size: float


@dataclass(frozen=True)
class Settings:
    half_life_s: float
    usage_scale: float  # gpueq·seconds at which the fair-share factor is 1/2
    age_max_s: float
    weights: Weights
    group_priority: Mapping[str, float]


@dataclass(frozen=True)
class Waiting:
    """A queued request, as priority sees it."""

    id: int
    user: str
    group: str | None
    size: float  # units asked for
    created_at: float


@dataclass(frozen=True)
class Factor:
    name: str
    value: float  # 0..1
    weight: float

    @property
    def points(self) -> float:
        return self.value * self.weight


@dataclass(frozen=True)
class Priority:
    entry_id: int
    usage: float  # the user's decayed usage, gpueq·seconds
    factors: tuple[Factor, ...]

    @property
    def total(self) -> float:
        return sum(f.points for f in self.factors)


def decay(age_s: float, half_life_s: float) -> float:
    """How much one gpueq·second used `age_s` seconds ago still counts: 2^(-age/H)."""
    return math.pow(2.0, -max(0.0, age_s) / half_life_s)


def decayed_usage(usages: Iterable[Usage], user: str, now: float, half_life_s: float) -> float:
    """The user's use, each second weighted by decay(): the integral of 2^(-(now-t)/H) dt over
    every interval they held gpueq, plus each admission penalty decayed from its start."""
    k = math.log(2) / half_life_s
    total = 0.0
    for u in usages:
        if u.user != user:
            continue
        end = now if u.end is None else min(u.end, now)
        start = min(u.start, end)
        # ∫_start^end e^(-k(now-t)) dt = (e^(-k(now-end)) - e^(-k(now-start))) / k
        total += u.gpueq * (math.exp(-k * (now - end)) - math.exp(-k * (now - start))) / k
        total += u.penalty * decay(now - u.start, half_life_s)
    return total


def fairshare_factor(usage: float, usage_scale: float) -> float:
    return math.pow(2.0, -usage / usage_scale)


def priority(w: Waiting, usage: float, now: float, s: Settings) -> Priority:
    age = min(1.0, max(0.0, now - w.created_at) / s.age_max_s)
    group = s.group_priority.get(w.group, 0.0) if w.group is not None else 0.0
    size = 1.0 / max(1.0, w.size)
    return Priority(
        entry_id=w.id,
        usage=usage,
        factors=(
            Factor("fairshare", fairshare_factor(usage, s.usage_scale), s.weights.fairshare),
            Factor("age", age, s.weights.age),
            Factor("group", group, s.weights.group),
            Factor("size", size, s.weights.size),
        ),
    )


def ranked(
    waiting: Sequence[Waiting], usages: Sequence[Usage], now: float, s: Settings
) -> list[Priority]:
    """Every waiting request's priority, highest first; ties go to the older entry (lower id)."""
    of_user: dict[str, list[Usage]] = {}
    for u in usages:  # grouped once: n users × m usages would be quadratic
        of_user.setdefault(u.user, []).append(u)
    by_user: dict[str, float] = {}
    out: list[Priority] = []
    for w in waiting:
        if w.user not in by_user:
            by_user[w.user] = decayed_usage(of_user.get(w.user, ()), w.user, now, s.half_life_s)
        out.append(priority(w, by_user[w.user], now, s))
    return sorted(out, key=lambda p: (-p.total, p.entry_id))
