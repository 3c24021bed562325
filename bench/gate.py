"""Benchmark: the Docker gate against the engine's own socket, side by side in one run.

Runs a real ds01d (simulated 8xH100-mig-mixed machine) on a Docker engine you name — never the
host's by accident: pass --docker-host or set DS01_TEST_DOCKER_HOST (scripts/test-docker.sh) —
creates a throw-away user in the gate group, and times, interleaved round by round:

  * `docker ps` (the whole command a user types) through the gate and directly on the engine
    socket, both as that user, --ps-rounds rounds (for the run, the engine socket is lent to
    the user's group and its owner and mode are put back afterwards);
  * then `docker run --rm IMAGE true` the same two ways, --rounds rounds (through the gate
    this includes the policy checks, a CPU-only allocation, stamping, and releasing it when
    the container goes);
  * concurrent loads (issue 14, item 3), both ways, the order alternating round by round:
    16 clients (--clients) doing GET /containers/json on keep-alive connections, and 16 doing
    `docker run --rm IMAGE true` (the whole command) in a loop, --seconds each.

Reports medians and the ratio gate/direct of medians for the single commands (aim: ≤ 1.10),
and for the loads requests per second and p99 latency both ways (aims: throughput ≥ 0.9× and
p99 ≤ 1.2× the engine's), with the machine's load average. Must run as root (creates a user).

Usage:  .venv/bin/python bench/gate.py [--rounds 15] [--ps-rounds 120] [--seconds 5]
                                       [--load-rounds 2] [--clients 16] [--docker-host unix:///…]
Prints the machine description and a Markdown table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import grp
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MACHINE = ROOT / "examples" / "machines" / "8xH100-mig-mixed.yaml"
IMAGE = "ds01-test/busybox:latest"
DOCKER = shutil.which("docker", path="/usr/local/bin:/usr/bin") or "docker"
CONFIG = """\
defaults:
  max_gpueq: 100
  max_units_per_container: 4
  max_containers: 500
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
  cpus: 1
  memory: 256m
host:
  gate_group: {group}
docker:
  host: {host}
"""

LOAD = r'''
import http.client, json, os, socket, subprocess, sys, threading, time
mode, path, seconds, clients = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

lat = [[] for _ in range(clients)]
errors = [0] * clients
start = time.monotonic()
deadline = start + seconds

def lister(i):
    c = Conn("docker")
    while time.monotonic() < deadline:
        t = time.perf_counter()
        c.request("GET", "/v1.41/containers/json")
        r = c.getresponse()
        r.read()
        if r.status == 200:
            lat[i].append(time.perf_counter() - t)
        else:
            errors[i] += 1

def runner(i):
    argv = [sys.argv[5], "run", "--rm", sys.argv[6], "true"]
    env = {**os.environ, "DOCKER_HOST": "unix://" + path}
    while time.monotonic() < deadline:
        t = time.perf_counter()
        r = subprocess.run(argv, env=env, capture_output=True, check=False)
        if r.returncode == 0:
            lat[i].append(time.perf_counter() - t)
        else:
            errors[i] += 1
            sys.stderr.write(r.stderr.decode(errors="replace"))

work = lister if mode == "list" else runner
threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - start
print(json.dumps({"elapsed": elapsed, "latencies": [x for l in lat for x in l],
                  "errors": sum(errors)}))
'''


def as_uid(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return elapsed


@contextlib.contextmanager
def bench_user() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    group, user = f"ds01bg{tag}", f"ds01b{tag}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "--create-home", "--groups", group, user], check=True)
    try:
        yield user, group
    finally:
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True, check=False)
        subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)
        subprocess.run(["groupdel", group], capture_output=True, check=False)


@contextlib.contextmanager
def lend_socket(path: str, gid: int) -> Iterator[None]:
    """Let `gid` use the engine socket for the run (so both ways run as the same user)."""
    st = os.stat(path)
    os.chown(path, st.st_uid, gid)
    os.chmod(path, 0o660)
    try:
        yield
    finally:
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)


@contextlib.contextmanager
def daemon(host: str, group: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="ds01-bench-", dir="/tmp"))
    base.chmod(0o755)
    (base / "ds01.yaml").write_text(CONFIG.format(host=host, group=group))
    log = open(base / "ds01d.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(BIN / "ds01d"), "--config", str(base / "ds01.yaml"), "--sim", str(MACHINE),
         "--state-dir", str(base / "state"), "--run-dir", str(base / "run")],
        stdout=log, stderr=log,
    )
    gate = base / "run" / "docker.sock"
    try:
        deadline = time.monotonic() + 30
        while not gate.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ds01d did not start:\n{(base / 'ds01d.log').read_text()}")
            time.sleep(0.05)
        yield gate
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    docker_v = subprocess.run([DOCKER, "--version"], capture_output=True, text=True,
                              check=False).stdout
    return (f"{platform.node()}: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}, {docker_v.strip()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds of `docker run`")
    p.add_argument("--ps-rounds", type=int, default=120,
                   help="interleaved rounds of `docker ps` (~15 ms each: many, for a steady "
                        "median of a short command)")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="length of each concurrent load, each way, each round")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients in the loads")
    p.add_argument("--load-rounds", type=int, default=2,
                   help="rounds of the concurrent loads (the order of the ways alternates)")
    p.add_argument("--docker-host", default=os.environ.get("DS01_TEST_DOCKER_HOST"))
    args = p.parse_args()
    if not args.docker_host:
        raise SystemExit("name the engine: --docker-host unix:///…/docker.sock "
                         "(or DS01_TEST_DOCKER_HOST from scripts/test-docker.sh)")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates a user for the gate")
    engine_sock = args.docker_host.removeprefix("unix://")
    load_before = os.getloadavg()
    with (
        bench_user() as (user, group),
        daemon(args.docker_host, group) as gate,
        lend_socket(engine_sock, grp.getgrnam(group).gr_gid),
    ):
        pw = pwd.getpwnam(user)
        as_user = as_uid(pw.pw_uid, pw.pw_gid)
        ways = {
            "gate": (as_user, f"unix://{gate}", str(gate)),
            "direct": (as_user, args.docker_host, engine_sock),
        }
        base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": pw.pw_dir}
        commands = {
            "docker ps": ["ps"],
            f"docker run --rm {IMAGE} true": ["run", "--rm", IMAGE, "true"],
        }
        samples: dict[tuple[str, str], list[float]] = {
            (c, w): [] for c in commands for w in ways
        }
        # Each command in rounds of its own, so that no `docker ps` is timed while ds01d and
        # the engine still finish the `docker run` before it (its release, the engine's removal
        # of the container): that is the run's cost, already in its own time.
        for cmd, argv in commands.items():
            rounds = args.ps_rounds if cmd == "docker ps" else args.rounds
            for i in range(rounds + 2):  # two warm-up rounds, not counted
                order = list(ways) if i % 2 == 0 else list(reversed(ways))
                for way in order:
                    prefix, host, _ = ways[way]
                    t = timed([*prefix, DOCKER, *argv], {**base_env, "DOCKER_HOST": host})
                    if i >= 2:
                        samples[(cmd, way)].append(t)
        loads: dict[tuple[str, str], Load] = {
            (work, way): Load() for work in WORKLOADS for way in ways
        }
        for i in range(args.load_rounds):
            order = list(ways) if i % 2 == 0 else list(reversed(ways))
            for work in WORKLOADS:
                for way in order:
                    prefix, _, sock = ways[way]
                    r = subprocess.run(
                        [*prefix, str(BIN / "python"), "-c", LOAD, work, sock,
                         str(args.seconds), str(args.clients), DOCKER, IMAGE],
                        capture_output=True, text=True, check=True, env=base_env,
                    )
                    loads[(work, way)].add(json.loads(r.stdout))
        load_after = os.getloadavg()

    print(f"## gate — {dt.date.today().isoformat()}\n")
    print(f"Machine: {machine()}. Engine: dockerd on {args.docker_host}. "
          f"{args.ps_rounds} interleaved rounds of `docker ps`, then {args.rounds} of "
          "`docker run`; medians. Load average (1, 5, 15 min) at the start: "
          f"{' '.join(f'{x:.1f}' for x in load_before)}, at the end: "
          f"{' '.join(f'{x:.1f}' for x in load_after)}.\n")
    print("| Command | direct (ms) | gate (ms) | gate / direct |")
    print("|---|---|---|---|")
    for cmd in commands:
        d = statistics.median(samples[(cmd, "direct")]) * 1000
        g = statistics.median(samples[(cmd, "gate")]) * 1000
        print(f"| `{cmd}` | {d:.1f} | {g:.1f} | {g / d:.3f} |")
    print(f"\n{args.clients} concurrent clients, {args.load_rounds} rounds of {args.seconds:g} s "
          "each way, interleaved; p99 over every request of the rounds.\n")
    print("| Load | direct (/s) | gate (/s) | gate / direct | direct p99 (ms) | gate p99 (ms) "
          "| gate / direct p99 |")
    print("|---|---|---|---|---|---|---|")
    errors = []
    for work, title in WORKLOADS.items():
        d, g = loads[(work, "direct")], loads[(work, "gate")]
        print(f"| {title} | {d.rate:.1f} | {g.rate:.1f} | {g.rate / d.rate:.3f} | "
              f"{d.p99 * 1000:.1f} | {g.p99 * 1000:.1f} | {g.p99 / d.p99:.3f} |")
        if d.errors or g.errors:
            errors.append(f"{title}: direct {d.errors}, gate {g.errors}")
    # The engine's own pace moves from round to round on a small VM: the spread says how far
    # one round's ratio can be trusted.
    print("\nThroughput gate / direct, round by round: " + "; ".join(
        f"{title}: " + " ".join(f"{g / d:.3f}" for d, g in
                                zip(loads[(work, "direct")].rounds, loads[(work, "gate")].rounds,
                                    strict=True))
        for work, title in WORKLOADS.items()) + ".")
    if errors:
        print("\nErrors: " + "; ".join(errors) + ".")


WORKLOADS = {
    "list": "`GET /containers/json`, keep-alive",
    "run": f"`docker run --rm {IMAGE} true`",
}


class Load:
    """Pooled results of one workload one way over the rounds."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.rounds: list[float] = []  # requests per second in each round

    def add(self, result: dict[str, Any]) -> None:
        self.elapsed += float(result["elapsed"])
        self.latencies.extend(float(x) for x in result["latencies"])
        self.errors += int(result["errors"])
        self.rounds.append(len(result["latencies"]) / float(result["elapsed"]))

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    @property
    def p99(self) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98]


if __name__ == "__main__":
    main()
