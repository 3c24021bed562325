"""Benchmark: the queue dispatcher's decision (named queue_dispatch.py: a bench/queue.py run as a
script would shadow the standard library's `queue`) with 1,000 queued requests on 64 units.

In one process, on a real state database (WAL, the daemon's schema) and a simulated machine of
64 whole GPUs, all held (by 32 users, 2 each) after 500 earlier allocations that feed the
fair-share usage, with 1,000 deploys queued by 100 users; side by side in one run:

  * baseline: one allocation decision refused for lack of capacity
    (AllocationService.allocate: BEGIN IMMEDIATE, snapshot, place(), the refusal's event) —
    what `ds01 container deploy` costs ds01d before any Docker call;
  * decision: what a dispatcher pass decides before it tries the head — every waiting entry
    ranked by priority (queue.py: _ranked: entries, usage rows, fair share) and the estimated
    start times (_estimates), as `ds01 queue --all` also computes them.

The issue's aim: < 50 ms per dispatch cycle. Nothing here asserts; it prints. Usage:

    .venv/bin/python bench/queue_dispatch.py [--rounds 50]

The time from a release to the next queued container running needs the private Docker
engine: bench/queue_release.py measures it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from ds01.config import parse_config_text
from ds01.errors import Refusal, RefusalReason
from ds01.identity import Caller
from ds01.inventory.select import open_backend
from ds01.runtime.engine import Engine
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.containers import ContainerService, DeployRequest
from ds01.services.queue import QueueService
from ds01.store.db import Database

CONFIG = """\
defaults:
  max_gpueq: 10000
  max_units_per_container: 8
  max_containers: 100000
  allow_full_gpu: true
queue:
  max_per_user: 100
"""
GPUS = 64
QUEUED = 1000
PAST = 500


def machine_file(path: Path) -> Path:
    gpus = "".join(
        f"  - name: NVIDIA A100-SXM4-40GB\n    memory_mib: 40960\n"
        f'    pci_bus_id: "00000000:{i + 1:02X}:00.0"\n    numa_node: {i % 2}\n'
        for i in range(GPUS)
    )
    path.write_text(f'machine: bench-64xA100\ndriver_version: "550.127.08"\ngpus:\n{gpus}')
    return path


def caller(i: int) -> Caller:
    return Caller(uid=20000 + i, gid=20000 + i, pid=1, name=f"user{i:03d}", groups=frozenset())


def ms(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1000, s[min(len(s) - 1, int(len(s) * 0.99))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    rounds = ap.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config = parse_config_text(CONFIG, str(base / "ds01.yaml"))
        db = Database(base / "ds01.db")
        allocations = AllocationService(db, lambda: config)
        backend = open_backend("sim", machine_file(base / "m.yaml"))
        allocations.sync_units(backend.sample())
        one = AllocationRequest.from_options(gpus=1)
        for i in range(PAST):  # history for fair share
            row = allocations.allocate(caller(i % 100), one)
            allocations.release_by_daemon(row.id, "bench")
        for i in range(GPUS):  # a full machine
            allocations.allocate(caller(i // 2), one)
        containers = ContainerService(
            allocations, Engine("unix:///nonexistent.sock"), lambda: config
        )
        queue = QueueService(containers, None)
        full = Refusal(RefusalReason.NO_CAPACITY, "no free GPU")
        for i in range(QUEUED):
            req = DeployRequest(name=f"q{i}", image="img", allocation=one)
            queue.enqueue(caller(i % 100), req, full)

        refused: list[float] = []
        decided: list[float] = []
        for _ in range(rounds):
            t = time.perf_counter()
            with contextlib.suppress(Refusal):
                allocations.allocate(caller(999), one)
            refused.append(time.perf_counter() - t)
            t = time.perf_counter()
            with db.transaction(immediate=False) as conn:
                ranked = queue._ranked(conn, time.time())
            queue._estimates([e for e, _ in ranked], time.time())
            decided.append(time.perf_counter() - t)
        db.close()
    (b50, b99), (d50, d99) = ms(refused), ms(decided)
    print(
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(f"Run: .venv/bin/python bench/queue_dispatch.py --rounds {rounds}\n")
    print("| measurement | p50 | p99 |\n|---|---|---|")
    print(f"| allocate refused for no capacity (baseline) | {b50:.1f} ms | {b99:.1f} ms |")
    print(
        f"| rank {QUEUED} queued + estimates, {GPUS} units | {d50:.1f} ms ({d50 / b50:.1f}×) "
        f"| {d99:.1f} ms ({d99 / b99:.1f}×) |"
    )


if __name__ == "__main__":
    main()
