"""Benchmark: the web status page's cost to ds01d (issue 17 item 3), side by side with `ds01 gpu
status --json` in the same run.

A real ds01d on a simulated 8×H100 split 7×1g.10gb (56 units) holding 500 live allocations by 25
users (bench/metrics.py's prefill), the page on its own port. Measured:

  * GET /snapshot.json right after a change (an allocation: the snapshot is rebuilt), and again
    at once (the shared snapshot, from memory), on a kept-alive connection, with its size;
  * `ds01 gpu status --json`: the whole command, process start included;
  * allocate+release latency through api.sock (raw client, one at a time) alone, and with
    `web.max_clients` (20) live views open plus 20 tabs polling /snapshot.json back to back:
    what viewers cost an allocation. The viewers run in another process (no GIL shared with
    the timed client).

Nothing asserts; it prints a Markdown section for bench/RESULTS.md. Usage:

    .venv/bin/python bench/web.py [--n 50] [--cycles 200]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from alloc import CONFIG, RawClient, compile_ds01, daemon, describe_machine, machine_yaml, pct

from metrics import LIVE, USERS, command, cycles, free_port, ms, prefill

VIEWERS = 20  # web.max_clients' default


class Page:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", "/snapshot.json", headers={"Host": "localhost"})
        r = self.conn.getresponse()
        body = r.read()
        took = time.perf_counter() - t0
        assert r.status == 200, body[:200]
        return took, body


def live_view(port: int, stop: threading.Event, got: list[int]) -> None:
    """One tab's Server-Sent Events stream, read until stopped."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
    s.settimeout(0.5)
    while not stop.is_set():
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            break
        got.append(data.count(b"\ndata: ") + data.startswith(b"data: "))
    s.close()


def viewers(port: int, stop: Any, counts: Any) -> None:
    """VIEWERS live views and VIEWERS tabs polling back to back, until `stop` is set; `counts`
    gets (pushes received, polls made)."""
    done = threading.Event()
    pushed: list[int] = []
    polled: list[float] = []

    def poller() -> None:
        p = Page(port)
        while not done.is_set():
            polled.append(p.get()[0])

    threads = [
        threading.Thread(target=live_view, args=(port, done, pushed), daemon=True)
        for _ in range(VIEWERS)
    ] + [threading.Thread(target=poller, daemon=True) for _ in range(VIEWERS)]
    for t in threads:
        t.start()
    stop.wait()
    done.set()
    for t in threads:
        t.join(5)
    counts.put((sum(pushed), len(polled)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50, help="requests and commands timed")
    p.add_argument("--cycles", type=int, default=200, help="allocate+release cycles per side")
    args = p.parse_args()
    compile_ds01()
    port = free_port()
    config = CONFIG + f"web:\n  listen: 127.0.0.1:{port}\n"
    with tempfile.TemporaryDirectory(prefix="ds01-bench-web-") as tmp:
        base = Path(tmp)
        machine = base / "h100x8.yaml"
        machine.write_text(machine_yaml("bench 8xH100 7x1g", 8))
        (base / "state").mkdir()
        prefill(base, machine, config)
        with daemon(base, machine, config) as sock:
            page = Page(port)
            _, body = page.get()
            raw = RawClient(str(sock))
            rebuilt, cached = [], []
            for i in range(args.n):
                body_in = {"cpu_only": True, "container": f"w{i}"}
                status, a = raw.request("POST", "/v1/allocations", body_in)
                assert status == 201, a
                time.sleep(0.6)  # past the page's change check (MIN_CHECK_S): a rebuild is due
                rebuilt.append(page.get()[0])
                cached.append(page.get()[0])  # within MIN_CHECK_S: the same snapshot
                raw.request("POST", f"/v1/allocations/{a['id']}/release", {"reason": "bench"})
            env = {
                **os.environ,
                "DS01_RUN_DIR": str(sock.parent),
                "DS01_STATE_DIR": str(base / "state"),
                "DS01_CONFIG": str(base / "ds01.yaml"),
            }
            for _ in range(3):
                command(env, "gpu", "status", "--json")
            status_times = [command(env, "gpu", "status", "--json") for _ in range(args.n)]
            alone = cycles(sock, args.cycles)
            stop = multiprocessing.Event()
            counts: Any = multiprocessing.Queue()
            other = multiprocessing.Process(target=viewers, args=(port, stop, counts))
            other.start()
            time.sleep(2.0)  # every view connected and polling
            watched = cycles(sock, args.cycles)
            stop.set()
            pushes, polls = counts.get(timeout=60)
            other.join(30)

    print("\n".join(describe_machine()))
    print()
    print(f"### web: the status page, 8×H100 (56 × 1g.10gb), {LIVE} live allocations,"
          f" {USERS} users")  # fmt: skip
    print()
    print(f"Snapshot {len(body)} bytes (56 tiles with their activity lines, queue, events).")
    print()
    print("| what | p50 ms | p99 ms | ÷ gpu status p50 |")
    print("|---|---|---|---|")
    base_p50 = pct(status_times, 0.5)
    for label, values in (
        ("GET /snapshot.json after a change (rebuilt)", rebuilt),
        ("GET /snapshot.json again at once (shared, from memory)", cached),
        ("ds01 gpu status --json (whole command)", status_times),
    ):
        print(f"| {label} | {ms(values, 0.5)} | {ms(values, 0.99)} |"
              f" {pct(values, 0.5) / base_p50:.2f}x |")  # fmt: skip
    print()
    print("| allocate+release (cpu-only, raw client) | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for label, values in (
        ("alone", alone),
        (f"with {VIEWERS} live views and {VIEWERS} tabs polling back to back"
         f" ({polls} polls, {pushes} pushes)", watched),
    ):  # fmt: skip
        print(f"| {label} | {ms(values, 0.5)} | {ms(values, 0.99)} |"
              f" {statistics.fmean(values) * 1000:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
