"""Benchmark: allocate+release cycles through ds01d's API, against a raw SQLite lower bound.

Runs a real ds01d on a simulated machine (its socket, its database, its event loop) and, side by
side in one run, measures:

  * baseline: one raw SQLite cycle in this process — BEGIN IMMEDIATE, insert an allocation and
    its unit, COMMIT; BEGIN IMMEDIATE, delete both, COMMIT — on the real schema with the
    daemon's pragmas (WAL, synchronous=NORMAL). What a cycle costs with no API, no scheduler.
  * cycles/s and p50/p99 cycle latency with 1, 8 and 32 concurrent client processes, each
    looping `POST /v1/allocations {mig: [1g.10gb]}` then `POST /v1/allocations/ID/release`, on
    a simulated 8×H100 with every GPU split 7×1g (56 units, so no client waits for capacity).
    Two client kinds: `typed` is ds01.client.Client (httpx + pydantic, what the CLI uses);
    `raw` writes HTTP/1.1 on the socket itself, so its numbers are mostly the daemon's.
  * decision time against the host's load: p50/p99 of one allocate (raw client, one at a time)
    on a big simulated machine (32×H100 split 7×1g, 224 units) with 0 live allocations and with
    200 held by 20 other users, and the ratio.

Nothing here asserts; it prints. Usage:

    .venv/bin/python bench/alloc.py [--seconds 5] [--clients 1,8,32] [--held 200]

Prints the machine description and a Markdown section to append to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds01.api.schemas import AllocateIn
from ds01.client import Client
from ds01.errors import Refusal

BIN = Path(sys.executable).parent
NOWHERE = "unix:///nonexistent/ds01-bench-docker.sock"  # never the host's engine
CONFIG = f"""\
defaults:
  max_gpueq: 10000
  max_units_per_container: 8
  max_containers: 100000
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
allocation:
  reservation_timeout: 1h
docker:
  host: {NOWHERE}
"""


def machine_yaml(name: str, gpus: int) -> str:
    """A simulated H100 machine with every GPU split into seven 1g.10gb slices."""
    one = (
        "  - name: NVIDIA H100 80GB HBM3\n"
        "    memory_mib: 81559\n"
        "    mig_enabled: true\n"
        "    mig_devices:\n"
        + "".join(
            f"      - {{profile: 1g.10gb, gpu_instance_id: {gi}, memory_mib: 9984}}\n"
            for gi in range(7, 14)
        )
    )
    return f"machine: {name}\ngpus:\n" + one * gpus


# ---- measuring -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class Result:
    label: str
    clients: int
    cycles: int
    refused: int
    seconds: float
    latencies: list[float]  # seconds per cycle

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        p50, p99 = pct(self.latencies, 0.5) * 1000, pct(self.latencies, 0.99) * 1000
        return (
            f"| {self.label} | {self.clients} | {self.rate:,.0f} | {p50:.2f} | {p99:.2f} |"
            f" {self.cycles:,} | {self.refused} |"
        )


class RawClient:
    """HTTP/1.1 with keep-alive on a Unix socket, nothing else: the lightest possible client."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        self.sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: ds01d\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (x.partition(b":") for x in lines[1:])
                      if k.strip().lower() == b"content-length")  # fmt: skip
        while len(rest) < length:
            rest += self._more()
        self.buf = rest[length:]
        return status, json.loads(rest[:length])

    def _recv(self) -> None:
        self.buf += self._more()

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("ds01d closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def worker(kind: str, sock: str, wid: int, seconds: float, ready: Any, out: Any) -> None:
    """One client process: warm up, wait for every other client, then cycle for `seconds`."""
    lat: list[float] = []
    cycles = refused = 0
    if kind == "raw":
        raw = RawClient(sock)

        def cycle(i: int) -> bool:
            status, a = raw.request(
                "POST", "/v1/allocations", {"mig": ["1g.10gb"], "container": f"w{wid}-{i}"}
            )
            if status != 201:
                return False
            status, _ = raw.request("POST", f"/v1/allocations/{a['id']}/release", {"reason": "b"})
            assert status == 200, status
            return True

    else:
        typed = Client(sock)

        def cycle(i: int) -> bool:
            try:
                a = typed.allocate(AllocateIn(mig=["1g.10gb"], container=f"w{wid}-{i}"))
            except Refusal:
                return False
            typed.release(a.id, reason="b")
            return True

    for i in range(3):  # warm-up: connection, first requests
        cycle(-1 - i)
    ready.wait()  # everyone starts together, whatever their start-up cost was
    stop = time.perf_counter() + seconds
    i = 0
    while (t0 := time.perf_counter()) < stop:
        ok = cycle(i)
        i += 1
        if ok:
            lat.append(time.perf_counter() - t0)
            cycles += 1
        else:
            refused += 1
    out.put((cycles, refused, lat))


def run_clients(kind: str, sock: Path, n: int, seconds: float) -> Result:
    ctx = mp.get_context("fork")  # children inherit the imported client: no import per child
    q = ctx.Queue()
    ready = ctx.Barrier(n)
    procs = [
        ctx.Process(target=worker, args=(kind, str(sock), w, seconds, ready, q)) for w in range(n)
    ]
    for p in procs:
        p.start()
    parts = [q.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    lat = [x for _, _, ls in parts for x in ls]
    return Result(
        f"API, {kind} client", n, sum(c for c, _, _ in parts), sum(r for _, r, _ in parts),
        seconds, lat,
    )  # fmt: skip


def sqlite_baseline(tmp: Path, seconds: float) -> Result:
    """Insert an allocation and its unit, then delete them: two IMMEDIATE transactions."""
    from ds01.store.db import Database

    db = Database(tmp / "baseline.db")
    conn = db.conn
    conn.execute(
        "INSERT INTO units (uuid, kind, gpu_uuid, gpu_index, model, gpueq, first_seen, last_seen)"
        " VALUES ('MIG-x', 'mig', 'GPU-x', 0, 'H100', '1/7', 0, 0)"
    )
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            "INSERT INTO allocations (user, state, request, created_at, updated_at)"
            " VALUES ('bench', 'reserved', '{}', 0, 0)"
        )
        conn.execute(
            "INSERT INTO allocation_units (allocation_id, unit_uuid, live) VALUES (?, 'MIG-x', 1)",
            (cur.lastrowid,),
        )
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM allocation_units WHERE allocation_id = ?", (cur.lastrowid,))
        conn.execute("DELETE FROM allocations WHERE id = ?", (cur.lastrowid,))
        conn.execute("COMMIT")
        lat.append(time.perf_counter() - t0)
    db.close()
    return Result("SQLite insert+delete, in-process", 1, len(lat), 0, seconds, lat)


# ---- the daemon ----------------------------------------------------------------------------


@contextmanager
def daemon(base: Path, machine: Path, config: str = CONFIG) -> Iterator[Path]:
    """A real ds01d on `machine` with its state in `base`; yields its socket."""
    (base / "ds01.yaml").write_text(config)
    run = base / "run"
    sock = run / "api.sock"
    log = open(base / "ds01d.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(BIN / "ds01d"), "--config", str(base / "ds01.yaml"), "--sim", str(machine),
         "--state-dir", str(base / "state"), "--run-dir", str(run), "--log-level", "warning"],
        stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"ds01d exited: {(base / 'ds01d.log').read_text()[-2000:]}")
            try:
                RawClient(str(sock)).request("GET", "/v1/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("ds01d did not answer within 60s") from None
                time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def prefill(base: Path, machine: Path, held: int, users: int = 20) -> None:
    """`held` live one-slice reservations by `users` other users, made by the real allocation
    service before the daemon starts (the bench has no Unix users to make them through the
    socket). The reservation timeout is an hour: they stay live for the whole run."""
    from ds01.config import load_config
    from ds01.identity import Caller
    from ds01.inventory.select import open_backend
    from ds01.scheduler.snapshot import RequestKind
    from ds01.services.allocation import AllocationRequest, AllocationService
    from ds01.store.db import Database

    (base / "ds01.yaml").write_text(CONFIG)
    config = load_config(base / "ds01.yaml")
    db = Database(base / "state" / "ds01.db")
    svc = AllocationService(db, lambda: config)
    backend = open_backend("sim", machine)
    svc.sync_units(backend.sample())
    backend.close()
    for i in range(held):
        u = i % users
        who = Caller(uid=200000 + u, gid=200000, pid=0, name=f"bench-u{u:02d}",
                     groups=frozenset())  # fmt: skip
        svc.allocate(who, AllocationRequest(RequestKind.MIG, profiles=("1g.10gb",),
                                            container=f"held-{i}"))  # fmt: skip
    db.close()


def decision_times(socks: dict[int, Path], n: int) -> dict[int, list[float]]:
    """Latency of `n` allocates on each daemon, one request at a time, interleaved round by round
    (alternating which side goes first) so that both sides see the same machine load. Each
    allocation is released right after, untimed."""
    raw = {k: RawClient(str(s)) for k, s in socks.items()}

    def one(k: int, name: str) -> float:
        t0 = time.perf_counter()
        status, a = raw[k].request(
            "POST", "/v1/allocations", {"mig": ["1g.10gb"], "container": name}
        )
        took = time.perf_counter() - t0
        assert status == 201, a
        raw[k].request("POST", f"/v1/allocations/{a['id']}/release", {"reason": "b"})
        return took

    for k in raw:  # warm-up
        for i in range(5):
            one(k, f"w{i}")
    lat: dict[int, list[float]] = {k: [] for k in raw}
    order = list(raw)
    for i in range(n):
        for k in order if i % 2 == 0 else reversed(order):
            lat[k].append(one(k, f"d{i}"))
    for r in raw.values():
        r.close()
    return lat


def compile_ds01() -> None:
    """Write ds01's bytecode before timing commands, as an installed package has it: with
    PYTHONDONTWRITEBYTECODE set (as on some build machines) a module changed since its last
    compile would otherwise be compiled from source by every command timed (+3-5 ms)."""
    import compileall

    import ds01

    compileall.compile_dir(Path(ds01.__file__).parent, quiet=1)


def describe_machine() -> list[str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='minutes')}",
        f"- nproc: {os.cpu_count()}, CPU: {cpu}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" {platform.system()} {platform.release()}",
        f"- load average at start (1, 5, 15 min): {load}",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description="allocate+release cycles through ds01d's API")
    p.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--kinds", default="raw,typed")
    p.add_argument("--held", type=int, default=200, help="other users' live allocations")
    p.add_argument("--decisions", type=int, default=300, help="allocates timed per side")
    args = p.parse_args()
    clients = [int(x) for x in args.clients.split(",")]
    header = describe_machine()
    print("\n".join(header), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="ds01-bench-", dir="/tmp"))
    try:
        results = [sqlite_baseline(tmp, args.seconds)]
        print(results[0].row(), flush=True)
        (tmp / "m8.yaml").write_text(machine_yaml("bench-8xH100-7x1g", 8))
        (tmp / "d8").mkdir()
        with daemon(tmp / "d8", tmp / "m8.yaml") as sock:
            for kind in args.kinds.split(","):
                for n in clients:
                    r = run_clients(kind, sock, n, args.seconds)
                    results.append(r)
                    print(r.row(), flush=True)

        (tmp / "m32.yaml").write_text(machine_yaml("bench-32xH100-7x1g", 32))
        for held in (0, args.held):
            (tmp / f"held{held}").mkdir()
            if held:
                prefill(tmp / f"held{held}", tmp / "m32.yaml", held)
        with (
            daemon(tmp / "held0", tmp / "m32.yaml") as empty,
            daemon(tmp / f"held{args.held}", tmp / "m32.yaml") as busy,
        ):
            sides = decision_times({0: empty, args.held: busy}, args.decisions)
        for held, lat in sides.items():
            print(f"decision with {held} live: p50 {pct(lat, 0.5) * 1000:.2f} ms", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base_rate = results[0].rate

    def ratio(q: float) -> float:
        return pct(sides[args.held], q) / pct(sides[0], q)

    out = [
        "",
        f"## Allocation: allocate+release through the API (bench/alloc.py, {args.seconds:g}s"
        " per row)",
        "",
        *header,
        "",
        "Machine simulated: 8×H100, each split 7×1g.10gb (56 units); request `mig=[1g.10gb]`.",
        "Latency is one whole cycle (allocate, then release) as the client sees it.",
        "",
        "| what | clients | cycles/s | p50 ms | p99 ms | cycles | refused |",
        "|---|---|---|---|---|---|---|",
        *(r.row() for r in results),
        "",
        "| vs. the SQLite lower bound | clients | API cycles/s ÷ SQLite cycles/s |",
        "|---|---|---|",
        *(f"| {r.label} | {r.clients} | {r.rate / base_rate:.4f} |" for r in results[1:]),
        "",
        f"Decision time (one allocate, raw client, one at a time, {args.decisions} each, the two"
        " daemons interleaved) on a simulated 32×H100 split 7×1g (224 units):",
        "",
        "| live allocations of other users | p50 ms | p99 ms |",
        "|---|---|---|",
        *(
            f"| {h} | {pct(v, 0.5) * 1000:.2f} | {pct(v, 0.99) * 1000:.2f} |"
            for h, v in sides.items()
        ),
        "",
        f"Ratio {args.held} ÷ 0 live: p50 {ratio(0.5):.2f}, p99 {ratio(0.99):.2f},"
        f" mean {statistics.fmean(sides[args.held]) / statistics.fmean(sides[0]):.2f}.",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
