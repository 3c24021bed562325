"""Benchmark: one Prometheus scrape of ds01d's /metrics, side by side with `ds01 gpu status
--json` (and `ds01 top --once --json`) in the same run (issue 17's benchmark; aim: scrape < 20 ms).

A real ds01d on a simulated 8×H100 with every GPU split 7×1g.10gb (56 units, bench/alloc.py's
machine_yaml) holding 500 live allocations by 25 users: the 56 slices each reserved, and 444
CPU-only allocations (the machine has no more units; they weigh on every per-allocation and
per-user figure just the same). They are made by the real allocation service before the daemon
starts, as bench/alloc.py's prefill does (no Unix users here). Measured:

  * scrape: GET /metrics on a kept-alive TCP connection, as Prometheus does (p50/p99 over N),
    with its size in bytes and series;
  * the first scrape after a start, which counts the whole audit log (metrics/tally.py);
  * the HTTP stack: ds01d's aiohttp endpoint against prometheus_client's own thread server
    serving the same collector (in this process, over the daemon's database), a new
    connection per scrape;
  * `ds01 gpu status --json` and, where the command exists, `ds01 top --once --json`: the
    whole command, process start included (p50/p99 over N);
  * allocate+release latency through api.sock (raw client, one at a time) alone and while a
    scraper hammers /metrics back to back: what a scrape costs an allocation.

Nothing asserts; it prints a Markdown section for bench/RESULTS.md. Usage:

    .venv/bin/python bench/metrics.py [--n 50] [--cycles 200]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from alloc import (
    BIN,
    CONFIG,
    RawClient,
    compile_ds01,
    daemon,
    describe_machine,
    machine_yaml,
    pct,
)

LIVE = 500
USERS = 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefill(base: Path, machine: Path, config: str) -> None:
    from ds01.config import load_config
    from ds01.identity import Caller
    from ds01.inventory.select import open_backend
    from ds01.scheduler.snapshot import RequestKind
    from ds01.services.allocation import AllocationRequest, AllocationService
    from ds01.store.db import Database

    (base / "ds01.yaml").write_text(config)
    cfg = load_config(base / "ds01.yaml")
    db = Database(base / "state" / "ds01.db")
    svc = AllocationService(db, lambda: cfg)
    backend = open_backend("sim", machine)
    svc.sync_units(backend.sample())
    backend.close()
    for i in range(LIVE):
        u = i % USERS
        who = Caller(uid=200000 + u, gid=200000, pid=0, name=f"bench-u{u:02d}",
                     groups=frozenset())  # fmt: skip
        if i < 56:
            req = AllocationRequest(RequestKind.MIG, profiles=("1g.10gb",), container=f"c{i}")
        else:
            req = AllocationRequest(RequestKind.CPU, container=f"c{i}")
        svc.allocate(who, req)
    db.close()


class Scraper:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def once(self) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", "/metrics")
        r = self.conn.getresponse()
        body = r.read()
        took = time.perf_counter() - t0
        assert r.status == 200, body[:200]
        return took, body


def command(env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([str(BIN / "ds01"), *args], env=env, capture_output=True, check=False)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr.decode()[-500:]
    return took


def thread_server(base: Path, machine: Path) -> tuple[int, object]:
    """The other way to serve the same families: prometheus_client's own HTTP server in a
    thread, over ds01's collector reading the daemon's database and a sample of the same
    machine, in this process (what ds01d would do with start_http_server instead of aiohttp)."""
    from prometheus_client import start_http_server

    from ds01.inventory.select import open_backend
    from ds01.metrics.collector import Sources
    from ds01.metrics.server import registry_for
    from ds01.store import usage
    from ds01.store.db import Database
    from ds01.store.live import LiveCache

    db = Database(base / "state" / "ds01.db")
    backend = open_backend("sim", machine)
    sample = backend.sample()
    backend.close()
    sources = Sources(
        db=db,
        live=LiveCache(db),
        sample=lambda: sample,
        sample_interval=lambda: 5.0,
        host_process_statuses=lambda: (),
        docker_state=lambda: "down",
        loops=dict,
        invariant_problems=lambda: 0,
        hide_users=lambda: False,
        clock=time.time,
        backend="sim",
        usage=usage.totals_by_user,
    )
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry_for(sources))
    return port, server


def fresh(port: int) -> float:
    """One scrape on a new connection (prometheus_client's server closes after each)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    r.read()
    took = time.perf_counter() - t0
    conn.close()
    assert r.status == 200
    return took


def has_top(env: dict[str, str]) -> bool:
    r = subprocess.run(
        [str(BIN / "ds01"), "top", "--help"], env=env, capture_output=True, check=False
    )
    return r.returncode == 0 and b"--once" in r.stdout


def cycles(sock: Path, n: int) -> list[float]:
    raw = RawClient(str(sock))
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        status, a = raw.request("POST", "/v1/allocations", {"cpu_only": True, "container": f"b{i}"})
        assert status == 201, a
        raw.request("POST", f"/v1/allocations/{a['id']}/release", {"reason": "bench"})
        out.append(time.perf_counter() - t0)
    return out


def ms(values: list[float], q: float) -> str:
    return f"{pct(values, q) * 1000:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50, help="scrapes and commands timed")
    p.add_argument("--cycles", type=int, default=200, help="allocate+release cycles per side")
    args = p.parse_args()
    compile_ds01()
    port = free_port()
    config = CONFIG + f"metrics:\n  listen: 127.0.0.1:{port}\n"
    with tempfile.TemporaryDirectory(prefix="ds01-bench-metrics-") as tmp:
        base = Path(tmp)
        machine = base / "h100x8.yaml"
        machine.write_text(machine_yaml("bench 8xH100 7x1g", 8))
        (base / "state").mkdir()
        prefill(base, machine, config)
        with daemon(base, machine, config) as sock:
            scraper = Scraper(port)
            first, body = scraper.once()
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            for _ in range(5):
                scraper.once()
            scrapes = [scraper.once()[0] for _ in range(args.n)]
            env = {
                **os.environ,
                "DS01_RUN_DIR": str(sock.parent),
                "DS01_STATE_DIR": str(base / "state"),
                "DS01_CONFIG": str(base / "ds01.yaml"),
            }
            for _ in range(3):
                command(env, "gpu", "status", "--json")
            status = [command(env, "gpu", "status", "--json") for _ in range(args.n)]
            # `ds01 top --once --json` (issue 17 item 2) is timed here once the command exists.
            top = (
                [command(env, "top", "--once", "--json") for _ in range(args.n)]
                if has_top(env)
                else []
            )
            # The HTTP stack: ds01d's aiohttp endpoint against prometheus_client's thread
            # server over the same collector, each scrape on a new connection.
            other_port, other = thread_server(base, machine)
            for _ in range(5):
                fresh(port), fresh(other_port)
            stacks: dict[str, list[float]] = {"aiohttp": [], "thread": []}
            for _ in range(args.n):
                stacks["aiohttp"].append(fresh(port))
                stacks["thread"].append(fresh(other_port))
            other.shutdown()  # type: ignore[attr-defined]
            alone = cycles(sock, args.cycles)
            stop = threading.Event()
            busy: list[float] = []

            def hammer() -> None:
                s = Scraper(port)
                while not stop.is_set():
                    busy.append(s.once()[0])

            t = threading.Thread(target=hammer, daemon=True)
            t.start()
            scraped = cycles(sock, args.cycles)
            stop.set()
            t.join()

    print("\n".join(describe_machine()))
    print()
    print(f"### metrics: /metrics scrape, 8×H100 (56 × 1g.10gb), {LIVE} live allocations,"
          f" {USERS} users")  # fmt: skip
    print()
    print(f"Scrape body {len(body)} bytes, {series} series; first scrape after start"
          f" {first * 1000:.1f} ms (counts the audit log).")  # fmt: skip
    print()
    print("| what | p50 ms | p99 ms | ÷ scrape p50 |")
    print("|---|---|---|---|")
    base_p50 = pct(scrapes, 0.5)
    rows = [("GET /metrics (kept-alive)", scrapes), ("ds01 gpu status --json", status)]
    if top:
        rows.append(("ds01 top --once --json", top))
    for label, values in rows:
        ratio = pct(values, 0.5) / base_p50
        print(f"| {label} | {ms(values, 0.5)} | {ms(values, 0.99)} | {ratio:.1f}x |")
    if not top:
        print("| ds01 top --once --json | (no such command in this tree) | | |")
    for label, key in (
        ("GET /metrics, new connection: ds01d (aiohttp, event loop + worker thread)", "aiohttp"),
        ("GET /metrics, new connection: prometheus_client thread server", "thread"),
    ):
        values = stacks[key]
        ratio = pct(values, 0.5) / base_p50
        print(f"| {label} | {ms(values, 0.5)} | {ms(values, 0.99)} | {ratio:.1f}x |")
    print()
    print("| allocate+release (cpu-only, raw client) | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for label, values in (("alone", alone), (f"with a back-to-back scraper ({len(busy)} scrapes)",
                                                scraped)):  # fmt: skip
        print(f"| {label} | {ms(values, 0.5)} | {ms(values, 0.99)} |"
              f" {statistics.fmean(values) * 1000:.1f} |")  # fmt: skip
    print()
    print(f"Aim: scrape < 20 ms — p50 {ms(scrapes, 0.5)} ms, p99 {ms(scrapes, 0.99)} ms.")


if __name__ == "__main__":
    main()
