"""What each unit did over the last minutes, kept in ds01d's memory from the samples it takes
anyway: the web page's sparklines (docs/web.md), and any other live view that wants a trend.

One reading per unit per sample: a whole GPU's utilization (NVML's utilization.gpu) where the
unit reports one, else the share of its memory in use — MIG devices report no utilization (BRIEF
§6 item 5), and memory in use is what the lifecycle's own activity signal reads for them
(lifecycle/activity.py). Readings are averaged into fixed buckets (BUCKETS over WINDOW_S), so
the memory held is bounded by the number of units, whatever the sample interval.

Not persisted: after a restart the lines start empty. Must not talk to NVML or Docker; record()
is called with the sample the daemon already took. Thread-safe: the sampler records from a worker
thread while a reader copies.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from ds01.model.inventory import MachineSample

WINDOW_S = 600.0  # ten minutes
BUCKETS = 60  # one point per WINDOW_S / BUCKETS seconds


class Measure(StrEnum):
    UTILIZATION = "utilization"  # percent of the time a kernel ran (whole GPUs)
    MEMORY = "memory"  # percent of the unit's memory in use (MIG devices, GPUs without utilization)


@dataclass(frozen=True)
class Trend:
    """One unit's points, oldest first: (bucket start, mean percent); a bucket without a
    reading is absent, not zero."""

    measure: Measure
    points: tuple[tuple[float, float], ...]


def readings(sample: MachineSample) -> dict[str, tuple[Measure, float]]:
    """unit uuid → what one sample says about it (units without either reading are left out)."""
    out: dict[str, tuple[Measure, float]] = {}

    def memory(uuid: str, used: int | None, total: int | None) -> None:
        if used is not None and total:
            out[uuid] = (Measure.MEMORY, min(100.0, 100.0 * used / total))

    for g in sample.gpus:
        if g.mig_enabled:
            for m in g.mig_devices:
                memory(m.uuid, m.memory_used_mib, m.memory_total_mib)
        elif g.utilization_pct is not None:
            out[g.uuid] = (Measure.UTILIZATION, float(g.utilization_pct))
        else:
            memory(g.uuid, g.memory_used_mib, g.memory_total_mib)
    return out


class UnitHistory:
    def __init__(self, window_s: float = WINDOW_S, buckets: int = BUCKETS) -> None:
        self.window_s = window_s
        self.step_s = window_s / buckets
        self._buckets = buckets
        self._lock = threading.Lock()
        # uuid → (measure, deque of [bucket start, sum, count])
        self._lines: dict[str, tuple[Measure, deque[list[float]]]] = {}

    def record(self, sample: MachineSample) -> None:
        if sample.taken_at is None:
            return
        at = sample.taken_at.timestamp()
        start = at - at % self.step_s
        found = readings(sample)
        present = {u.uuid for u in sample.units()}
        with self._lock:
            for uuid in [u for u in self._lines if u not in present]:
                del self._lines[uuid]  # a unit gone from the machine (MIG re-layout)
            for uuid, (measure, value) in found.items():
                line = self._lines.get(uuid)
                if line is None or line[0] is not measure:
                    line = (measure, deque(maxlen=self._buckets))
                    self._lines[uuid] = line
                points = line[1]
                if points and points[-1][0] == start:
                    points[-1][1] += value
                    points[-1][2] += 1
                elif not points or points[-1][0] < start:
                    points.append([start, value, 1])
                # An older bucket (the wall clock stepped back): dropped, never reordered.

    def trends(self, now: float) -> dict[str, Trend]:
        """Every unit's points within the window that ends at `now`."""
        since = now - self.window_s
        with self._lock:
            return {
                uuid: Trend(
                    measure,
                    tuple((p[0], round(p[1] / p[2], 1)) for p in points if p[0] > since),
                )
                for uuid, (measure, points) in self._lines.items()
            }
