"""Benchmark: from a release to the next queued container running (issue 16), against
`docker run -d` of the same image, side by side in one run.

A real ds01d (bench/deploy.py's daemon) on the simulated 8×H100 with mixed MIG, talking to the
private Docker engine. Each round: every whole GPU is reserved (POST /v1/allocations, gpus 1,
until capacity refuses), one `gpus 1` deploy is queued (POST /v1/containers with queue), then one
reservation is released and the clock runs until the engine reports the queued container's
`start` event (read from the engine's own event stream, not by polling). The baseline is the
whole of `docker run -d` of the same image and command, timed the same round. Reservations are
released and the container retired between rounds (untimed).

The issue's aim: release → queued container running ≤ 1.3× `docker run -d`. Nothing here
asserts; it prints a Markdown section to append to bench/RESULTS.md. Needs the private engine:

    .venv/bin/python bench/queue_release.py [--rounds 9] [--docker-host unix:///…/docker.sock]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import threading
import time

import docker
from deploy import COMMAND, IMAGE, daemon

from ds01.api.schemas import AllocateIn, DeployIn
from ds01.client import Client
from ds01.errors import Refusal


class StartWatch:
    """The engine's event stream, opened before the release, and when the ds01 container
    `name` started (the engine names it <user>.<name>; ds01.name is its label)."""

    def __init__(self, host: str, name: str) -> None:
        self._client = docker.DockerClient(base_url=host)
        self._events = self._client.events(
            decode=True,
            filters={"type": "container", "event": "start", "label": [f"ds01.name={name}"]},
        )
        self.at: float | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for _ in self._events:
            self.at = time.perf_counter()
            return

    def wait(self, timeout: float = 60.0) -> float:
        self._thread.join(timeout)
        self._events.close()
        self._client.close()
        if self.at is None:
            raise SystemExit("the queued container did not start within a minute")
        return self.at


def one_round(client: Client, host: str, i: int) -> float:
    """Seconds from a release to the queued container's start."""
    held = []
    while True:
        try:
            held.append(client.allocate(AllocateIn(gpus=1)))
        except Refusal:
            break
    name = f"queued-{os.getpid()}-{i}"
    entry = client.deploy_or_queue(
        DeployIn(name=name, image=IMAGE, command=list(COMMAND), gpus=1, queue=True)
    )
    if getattr(entry, "state", None) != "queued":
        raise SystemExit(f"the deploy was not queued: {entry}")
    watch = StartWatch(host, name)
    time.sleep(0.2)  # the event stream is open before the release
    start = time.perf_counter()
    client.release(held.pop().id, reason="bench")
    took = watch.wait() - start
    for a in held:
        client.release(a.id, reason="bench")
    client.container_op(name, "retire")
    return took


def docker_run(host: str, i: int) -> float:
    env = {**os.environ, "DOCKER_HOST": host}
    name = f"direct-{os.getpid()}-{i}"
    t0 = time.perf_counter()
    subprocess.run(
        ["docker", "run", "-d", "--name", name, IMAGE, *COMMAND], env=env, check=True,
        capture_output=True,
    )  # fmt: skip
    took = time.perf_counter() - t0
    subprocess.run(["docker", "rm", "-f", name], env=env, check=True, capture_output=True)
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--docker-host", default=os.environ.get("DS01_TEST_DOCKER_HOST"))
    args = p.parse_args()
    if not args.docker_host:
        raise SystemExit("name an engine: --docker-host or DS01_TEST_DOCKER_HOST")
    load0 = os.getloadavg()
    queued: list[float] = []
    direct: list[float] = []
    with daemon(args.docker_host) as (sock, _env), Client(sock, timeout=120) as client:
        one_round(client, args.docker_host, -1)  # warm-up, not counted
        docker_run(args.docker_host, -1)
        for i in range(args.rounds):
            # Alternate which goes first, so both see the same machine.
            if i % 2:
                direct.append(docker_run(args.docker_host, i))
                queued.append(one_round(client, args.docker_host, i))
            else:
                queued.append(one_round(client, args.docker_host, i))
                direct.append(docker_run(args.docker_host, i))
    load1 = os.getloadavg()
    q, d = statistics.median(queued) * 1000, statistics.median(direct) * 1000
    print(f"## queue: release → queued container running — {time.strftime('%Y-%m-%d %H:%M')} UTC")
    print()
    print(
        f"`bench/queue_release.py --rounds {args.rounds}`; {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"Linux {platform.release()}; load average {load0[0]:.1f} at the start, "
        f"{load1[0]:.1f} at the end."
    )
    print()
    print("| what | median (ms) | min | max | / docker run -d |")
    print("|---|---|---|---|---|")
    print(
        f"| `docker run -d` | {d:.0f} | {min(direct) * 1000:.0f} | {max(direct) * 1000:.0f} |"
        " 1.00× |"
    )
    print(
        f"| release → queued container started | {q:.0f} | {min(queued) * 1000:.0f} |"
        f" {max(queued) * 1000:.0f} | {q / d:.2f}× |"
    )
    print()
    print(f"Aim: ≤ 1.3× — {'met' if q / d <= 1.3 else 'not met'}.")


if __name__ == "__main__":
    main()
