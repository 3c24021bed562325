"""Benchmark: idle reclaim latency and the lifecycle sampler's cost (issue 15, "Benchmark").

Runs a real ds01d (a simulated 8×H100 machine split into 56 1g.10gb MIG slices) on a Docker
engine you name — never the host's by accident: pass --docker-host or set DS01_TEST_DOCKER_HOST
(scripts/test-docker.sh) — and measures, in one run:

  1. Reclaim latency: idle GPU containers (sample_interval 1 s, idle_timeout 4 s, idle_samples 2,
     gpu_hold_after_stop 0 s) deployed together; for each, the time from its idle_timeout
     elapsing (the deadline ds01d's own events announce: idle_since + timeout) to its
     allocation's `released` event — the unit free again. Aim: ≤ one sample interval + the
     stop's grace (STOP_GRACE_S). Baseline in the same run: `docker stop` of the same kind of
     container straight on the engine.
  2. Sampler cost with 56 MIG units all allocated and N containers (default 200: 56 with a
     slice, the rest CPU-only): the CPU time of one lifecycle cycle — take the machine sample,
     apply it, one Reclaimer pass (activity records, container CPU from cgroup files) — run
     in this process on ds01d's own state (ds01d stopped for it), as a ratio of one core at a
     10 s sample interval. Aim: < 5 %. The first cycle (it asks the engine for each
     container's PID once) is shown apart. Also ds01d's whole-process CPU (every loop, not
     only the sampler) over a window at sample_interval 10 s, the same ratio.

The simulated backend stands in for NVML: a real NVML query costs more per cycle (see
../shared/fixtures/h200/ for what a real H200 took).

Usage:  .venv/bin/python bench/lifecycle.py [--trials 5] [--containers 200] [--cycles 30]
                                           [--window 60] [--docker-host unix:///…] [--append]
Prints the machine description and a Markdown section; --append adds it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from alloc import machine_yaml

from ds01.api.schemas import DeployIn
from ds01.client import Client
from ds01.errors import DaemonUnavailable
from ds01.model.limits import STOP_GRACE_S

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IMAGE = "ds01-test/busybox:latest"
# Exits on SIGTERM like a well-behaved job (a job that ignores it adds STOP_GRACE_S).
STOPPABLE = ["sh", "-c", 'trap "exit 0" TERM; while :; do sleep 1; done']
CONFIG = """\
gpu:
  sample_interval: {interval}
defaults:
  max_gpueq: 100
  max_units_per_container: 1
  max_containers: 1000
  cpus: 1
  memory: 64m
  gpu_hold_after_stop: 0s
  idle_timeout: {idle}
  policy:
    idle_samples: 2
    warn_before: 1s
docker:
  host: {host}
"""
LATENCY_INTERVAL_S = 1
LATENCY_IDLE_S = 4
COST_INTERVAL_S = 10


def describe_machine(host: str) -> list[str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    engine = subprocess.run(
        ["docker", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return [
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='minutes')}",
        f"- nproc: {os.cpu_count()}, CPU: {cpu}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" {platform.system()} {platform.release()}; {engine}, engine {host}",
        f"- load average at start (1, 5, 15 min): {load}",
    ]


@contextlib.contextmanager
def daemon(base: Path, config: str) -> Iterator[tuple[Client, subprocess.Popen[bytes]]]:
    """A real ds01d on the simulated machine, state in `base` (kept for the in-process part)."""
    base.mkdir(parents=True, exist_ok=True)
    shutil.copy(base.parent / "machine.yaml", base / "machine.yaml")
    (base / "ds01.yaml").write_text(config)
    log = open(base / "ds01d.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            str(BIN / "ds01d"),
            "--config",
            str(base / "ds01.yaml"),
            "--sim",
            str(base / "machine.yaml"),
            "--state-dir",
            str(base / "state"),
            "--run-dir",
            str(base / "run"),
        ],
        stdout=log,
        stderr=log,
    )
    sock = base / "run" / "api.sock"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"ds01d exited:\n{(base / 'ds01d.log').read_text()[-3000:]}")
            if sock.exists():
                with contextlib.suppress(DaemonUnavailable), Client(sock) as c:
                    c.health()
                    break
            if time.monotonic() > deadline:
                raise SystemExit("ds01d did not start within 60 s")
            time.sleep(0.05)
        with Client(sock) as client:
            yield client, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def events(base: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{base / 'state' / 'ds01.db'}?mode=ro", uri=True, timeout=10)
    try:
        return list(con.execute(sql, args))
    finally:
        con.close()


def remove_all(engine: docker.DockerClient) -> None:
    for c in engine.containers.list(all=True, filters={"label": "ds01.managed=true"}):
        with contextlib.suppress(docker.errors.APIError):
            c.remove(force=True)


# ---- 1. reclaim latency ----------------------------------------------------------------------


def reclaim_latency(base: Path, host: str, trials: int) -> tuple[list[float], list[float]]:
    """(seconds from each deadline to its release, seconds from each deadline to 'stopping')."""
    config = CONFIG.format(interval=f"{LATENCY_INTERVAL_S}s", idle=f"{LATENCY_IDLE_S}s",
                           host=host)  # fmt: skip
    with daemon(base, config) as (client, _):
        allocs = []
        for i in range(trials):
            out = client.deploy(
                DeployIn(name=f"idle{i}", image=IMAGE, mig=["1g.10gb"], command=list(STOPPABLE))
            )
            assert out.allocation is not None
            allocs.append(out.allocation.id)
        deadline = time.monotonic() + 120
        while True:
            released = {
                int(str(r[0]))
                for r in events(base, "SELECT allocation_id FROM events WHERE action = 'released'")
            }
            if set(allocs) <= released:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"not all released within 120 s: {sorted(released)}")
            time.sleep(0.5)
    to_free, to_stop = [], []
    for a in allocs:
        ((stop_ts, details),) = events(
            base,
            "SELECT ts, details FROM events WHERE allocation_id = ? AND action = 'stopping'",
            a,
        )
        ((free_ts,),) = events(
            base, "SELECT ts FROM events WHERE allocation_id = ? AND action = 'released'", a
        )
        d = json.loads(str(details))
        due = float(d["deadline"])  # idle_since + idle_timeout, as ds01d announced it
        to_free.append(float(str(free_ts)) - due)
        to_stop.append(float(str(stop_ts)) - due)
    return to_free, to_stop


def docker_stop_baseline(engine: docker.DockerClient, n: int) -> list[float]:
    out = []
    for i in range(n):
        c = engine.containers.run(IMAGE, STOPPABLE, detach=True, name=f"ds01-bench-stop-{i}")
        time.sleep(0.5)  # let the shell set its trap
        t = time.perf_counter()
        c.stop(timeout=STOP_GRACE_S)
        out.append(time.perf_counter() - t)
        c.remove(force=True)
    return out


# ---- 2. sampler cost -------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def fill(client: Client, containers: int) -> int:
    """56 containers with a MIG slice each and the rest CPU-only, four deploys at a time."""
    gpu = min(56, containers)

    def one(i: int) -> None:
        client_i = Client(client.socket_path)
        with client_i:
            client_i.deploy(
                DeployIn(name=f"c{i}", image=IMAGE, mig=["1g.10gb"] if i < gpu else None,
                         cpu_only=i >= gpu, command=["sleep", "86400"])
            )  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(containers)))
    return gpu


def sampler_cost(
    base: Path, host: str, containers: int, cycles: int, window: float
) -> dict[str, float]:
    config = CONFIG.format(interval=f"{COST_INTERVAL_S}s", idle="1h", host=host)
    with daemon(base, config) as (client, proc):
        gpu = fill(client, containers)
        time.sleep(COST_INTERVAL_S)  # let the first passes after the deploys settle
        c0, t0 = proc_cpu_s(proc.pid), time.monotonic()
        time.sleep(window)
        daemon_ratio = (proc_cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
    # ds01d stopped: run its own sampler and lifecycle pass here, on its database and engine.
    os.environ["DS01_CONFIG"] = str(base / "ds01.yaml")
    from ds01.daemon.service import Daemon
    from ds01.paths import Paths

    d = Daemon(
        Paths(base / "ds01.yaml", base / "state", base / "run"), sim=str(base / "machine.yaml")
    )
    live = [r for r in d.allocations.all_live() if r.units]
    per_cycle = []
    for _ in range(cycles + 1):
        t = time.process_time()
        d.apply_sample(d.take_sample())
        d.reclaimer.tick()
        per_cycle.append(time.process_time() - t)
        time.sleep(0.2)  # CPU readings need time between them; not counted
    first, steady = per_cycle[0], per_cycle[1:]
    return {
        "gpu_containers": gpu,
        "gpu_allocations": len(live),
        "first_ms": first * 1000,
        "p50_ms": statistics.median(steady) * 1000,
        "max_ms": max(steady) * 1000,
        "ratio": statistics.median(steady) / COST_INTERVAL_S,
        "daemon_ratio": daemon_ratio,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--window", type=float, default=60.0, help="seconds of ds01d CPU measured")
    ap.add_argument("--docker-host", default=os.environ.get("DS01_TEST_DOCKER_HOST", ""))
    ap.add_argument("--label", default="", help="a note for the heading (e.g. 'busy machine')")
    ap.add_argument("--append", action="store_true", help="append the section to RESULTS.md")
    args = ap.parse_args()
    if not args.docker_host:
        raise SystemExit("name the engine: --docker-host or DS01_TEST_DOCKER_HOST")
    os.environ["DOCKER_HOST"] = args.docker_host
    engine = docker.DockerClient(base_url=args.docker_host, timeout=120)
    machine = describe_machine(args.docker_host)
    base = Path(tempfile.mkdtemp(prefix="ds01-bench-life-", dir="/tmp"))
    (base / "machine.yaml").write_text(machine_yaml("bench-56mig", 8))  # 56 MIG units
    try:
        remove_all(engine)
        stop_s = docker_stop_baseline(engine, 3)
        to_free, to_stop = reclaim_latency(base / "latency", args.docker_host, args.trials)
        remove_all(engine)
        cost = sampler_cost(base / "cost", args.docker_host, args.containers, args.cycles,
                            args.window)  # fmt: skip
    finally:
        remove_all(engine)
        shutil.rmtree(base, ignore_errors=True)
    load_end = " ".join(f"{x:.1f}" for x in os.getloadavg())
    aim = LATENCY_INTERVAL_S + STOP_GRACE_S
    stop_med = statistics.median(stop_s)
    free_med, free_max = statistics.median(to_free), max(to_free)
    label = f"; {args.label}" if args.label else ""
    lines = [
        f"## lifecycle — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC{label}",
        "",
        *machine,
        f"- load average at end: {load_end}",
        "",
        f"Reclaim latency: {args.trials} idle containers with one MIG slice each, sample_interval"
        f" {LATENCY_INTERVAL_S} s, idle_timeout {LATENCY_IDLE_S} s, gpu_hold_after_stop 0 s;"
        " from the deadline ds01d announced to the allocation's `released` event.",
        "",
        "| what | median s | max s |",
        "|---|---|---|",
        f"| deadline → `stopping` event | {statistics.median(to_stop):.2f} | {max(to_stop):.2f} |",
        f"| deadline → unit free (`released`) | {free_med:.2f} | {free_max:.2f} |",
        f"| baseline: `docker stop` of the same container | {stop_med:.2f} | {max(stop_s):.2f} |",
        "",
        f"Ratio to the aim (sample interval + STOP_GRACE_S = {aim} s): median"
        f" {free_med / aim:.3f}, max {free_max / aim:.3f}. Against the interval plus the measured"
        f" `docker stop` ({LATENCY_INTERVAL_S + stop_med:.2f} s): median"
        f" {free_med / (LATENCY_INTERVAL_S + stop_med):.3f}.",
        "",
        f"Sampler cost: 56 MIG units, {args.containers} containers ({cost['gpu_containers']:.0f}"
        f" with a slice, {cost['gpu_allocations']:.0f} GPU allocations live), one cycle = sample"
        " + apply + one lifecycle pass, CPU time in-process on ds01d's state, "
        f"{args.cycles} cycles:",
        "",
        "| what | CPU ms per cycle | ratio of one core at 10 s |",
        "|---|---|---|",
        f"| first cycle (engine asked each container's PID) | {cost['first_ms']:.1f} |"
        f" {cost['first_ms'] / 1000 / COST_INTERVAL_S:.4f} |",
        f"| later cycles, median | {cost['p50_ms']:.1f} | {cost['ratio']:.4f} |",
        f"| later cycles, max | {cost['max_ms']:.1f} |"
        f" {cost['max_ms'] / 1000 / COST_INTERVAL_S:.4f} |",
        f"| ds01d, whole process (every loop), {args.window:.0f} s window | — |"
        f" {cost['daemon_ratio']:.4f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
