"""Benchmark: what the usage ledger costs ds01d per sample, against an allocate+release cycle.

In one process, on a real state database and a simulated 8×H100 split 7×1g (56 units, the
issue's machine), with every unit held by one of 56 live allocations of 20 users:

  * baseline: p50/p99 of one allocate+release cycle (AllocationService, in process: no API),
    what a decision costs;
  * ledger: p50/p99 of UsageLedger.observe() for one new sample (a read transaction, the
    attribution, one write transaction adding 56 allocation-hour rows, 20 user totals and the
    machine's hour), and of its write transaction alone — the time allocations may wait for the
    database's write lock, once per gpu.sample_interval (5 s by default).

Nothing here asserts; it prints. Usage:

    .venv/bin/python bench/usage.py [--samples 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alloc import describe_machine, machine_yaml, pct

from ds01.config import parse_config_text
from ds01.identity import Caller
from ds01.inventory.sim import SimBackend
from ds01.model.gpueq import GpuEq
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.usage import Holding, Reading, UsageLedger, attribute
from ds01.store import usage as store
from ds01.store.db import Database

CONFIG = (
    "defaults:\n  max_gpueq: 100\n  max_containers: 100\n  allow_full_gpu: true\n"
    "allocation:\n  reservation_timeout: 10h\n"
)


def one_slice(i: int) -> AllocationRequest:
    return AllocationRequest(RequestKind.GPUEQ, gpueq=GpuEq.of(1, 7), container=f"bench{i}")


def caller(i: int) -> Caller:
    return Caller(uid=-1, gid=-1, pid=0, name=f"user{i % 20}", groups=frozenset())


def main() -> None:
    p = argparse.ArgumentParser(description="the usage ledger's cost per sample")
    p.add_argument("--samples", type=int, default=300)
    args = p.parse_args()
    print("\n".join(describe_machine()), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="ds01-bench-usage-"))
    (tmp / "machine.yaml").write_text(machine_yaml("bench-usage", 8))
    backend = SimBackend(tmp / "machine.yaml")
    db = Database(tmp / "ds01.db")
    now = [1_800_000_000.0]
    config = parse_config_text(CONFIG, "bench.yaml")
    svc = AllocationService(db, lambda: config, clock=lambda: now[0])
    svc.sync_units(backend.sample())

    # Baseline: allocate+release cycles on the empty machine.
    cycles = []
    for i in range(args.samples):
        t = time.perf_counter()
        row = svc.allocate(caller(i), one_slice(i))
        svc.release(caller(i), row.id, "bench")
        cycles.append(time.perf_counter() - t)

    for i in range(56):
        svc.allocate(caller(i), one_slice(i))
    ledger = UsageLedger(svc, max_gap=lambda: 60.0)
    ledger.observe(backend.sample(), now[0])
    observe, writes = [], []
    for _ in range(args.samples):
        now[0] += 5
        sample = backend.sample()
        t = time.perf_counter()
        ledger.observe(sample, now[0])
        observe.append(time.perf_counter() - t)
    # The write transaction alone, with one interval's shares.
    before, after = Reading(0.0, backend.sample()), Reading(5.0, backend.sample())
    live = svc.all_live()
    shares, machine = attribute(before, after, [Holding(r, 0.0, 5.0, {}) for r in live])
    for _ in range(args.samples):
        t = time.perf_counter()
        with db.transaction() as conn:
            store.add(conn, shares, machine)
        writes.append(time.perf_counter() - t)

    def ms(v: float) -> str:
        return f"{v * 1000:.2f} ms"

    base = pct(cycles, 0.5)
    print(f"\n### usage ledger, {len(live)} live allocations on 56 units, {args.samples} samples\n")
    print("| what | p50 | p99 | p50 / allocate+release p50 |")
    print("|---|---:|---:|---:|")
    for label, vals in (
        ("allocate+release cycle (baseline)", cycles),
        ("observe() per sample", observe),
        ("its write transaction", writes),
    ):
        print(
            f"| {label} | {ms(pct(vals, 0.5))} | {ms(pct(vals, 0.99))} |"
            f" {pct(vals, 0.5) / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
