"""Benchmark: `ds01 container deploy --detach` against `docker run -d`, and `ds01 container list`.

Runs a real ds01d (simulated 8xH100-mig-mixed machine) on a Docker engine you name — never the
host's by accident: pass --docker-host or set DS01_TEST_DOCKER_HOST (scripts/test-docker.sh) —
and, side by side in one run, times:

  * `docker run -d IMAGE sleep` (the baseline) and `ds01 container deploy NAME --image IMAGE
    --detach` CPU-only and with one GPU, each the whole command a user types; and the same two
    deploys as API calls (POST /v1/containers from a client already running: what ds01d itself
    adds, without the CLI's Python start-up). Interleaved round by round, reported as medians
    and ratios of medians, with 0 and with 40 other ds01 containers on the engine;
  * `ds01 container list` (the CLI) and GET /v1/containers (the API alone) with 50 containers.

Usage:  .venv/bin/python bench/deploy.py [--rounds 15] [--docker-host unix:///…/docker.sock]
Prints the machine description and a Markdown table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from alloc import compile_ds01

from ds01.api.schemas import DeployIn
from ds01.client import Client
from ds01.errors import DaemonUnavailable
from ds01.runtime.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MACHINE = ROOT / "examples" / "machines" / "8xH100-mig-mixed.yaml"
IMAGE = "ds01-test/busybox:latest"
COMMAND = ("sleep", "3600")
CONFIG = """\
defaults:
  max_gpueq: 100
  max_units_per_container: 4
  max_containers: 200
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
  cpus: 1
  memory: 256m
docker:
  host: {host}
"""


VARIANTS = {
    "docker": "docker run -d",
    "cli-cpu": "ds01 container deploy --cpu-only --detach",
    "cli-gpu": "ds01 container deploy --gpus 1 --detach",
    "api-cpu": "POST /v1/containers, cpu_only (API)",
    "api-gpu": "POST /v1/containers, gpus 1 (API)",
}


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return elapsed


@contextlib.contextmanager
def daemon(host: str) -> Iterator[tuple[Path, dict[str, str]]]:
    base = Path(tempfile.mkdtemp(prefix="ds01-bench-", dir="/tmp"))
    (base / "ds01.yaml").write_text(CONFIG.format(host=host))
    env = {
        **os.environ,
        "DS01_CONFIG": str(base / "ds01.yaml"),
        "DS01_STATE_DIR": str(base / "state"),
        "DS01_RUN_DIR": str(base / "run"),
    }
    env.pop("DOCKER_HOST", None)
    log = open(base / "ds01d.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            str(BIN / "ds01d"),
            "--config",
            env["DS01_CONFIG"],
            "--sim",
            str(MACHINE),
            "--state-dir",
            env["DS01_STATE_DIR"],
            "--run-dir",
            env["DS01_RUN_DIR"],
        ],
        stdout=log,
        stderr=log,
    )
    sock = base / "run" / "api.sock"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"ds01d exited:\n{(base / 'ds01d.log').read_text()}")
            if sock.exists():
                with contextlib.suppress(DaemonUnavailable), Client(sock) as c:
                    c.health()
                    break
            if time.monotonic() > deadline:
                raise SystemExit("ds01d did not start within 30 s")
            time.sleep(0.05)
        yield sock, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def machine_description(docker: list[str]) -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server = subprocess.run(
        [*docker, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    info = subprocess.run(
        [*docker, "info", "--format", "{{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "docker": f"{server} ({info})",
        "kernel": platform.release(),
    }


def run(rounds: int, host: str) -> None:
    docker = ["docker", "-H", host]
    compile_ds01()
    desc = machine_description(docker)
    print("machine:", ", ".join(f"{k} {v}" for k, v in desc.items()), flush=True)
    rows: list[tuple[str, str]] = []
    with daemon(host) as (sock, env), Client(sock, timeout=120) as client:
        ds01 = [str(BIN / "ds01")]
        background: list[str] = []

        def deploy_bg(name: str) -> None:
            client.deploy(DeployIn(name=name, image=IMAGE, cpu_only=True, command=list(COMMAND)))
            background.append(name)

        def retire(name: str) -> None:
            client.container_op(name, "retire")

        def baseline(i: int) -> Callable[[], float]:
            return lambda: timed(
                [*docker, "run", "-d", "--name", f"bench-docker-{i}", IMAGE, *COMMAND]
            )

        def api_deploy(name: str, **request: object) -> Callable[[], float]:
            body = DeployIn.model_validate(
                {"name": name, "image": IMAGE, "command": list(COMMAND), **request}
            )

            def go() -> float:
                start = time.perf_counter()
                client.deploy(body)
                return time.perf_counter() - start

            return go

        def ds01_deploy(name: str, *opts: str) -> Callable[[], float]:
            return lambda: timed(
                [
                    *ds01,
                    "container",
                    "deploy",
                    name,
                    "--image",
                    IMAGE,
                    "--detach",
                    *opts,
                    "--",
                    *COMMAND,
                ],
                env=env,
            )

        try:
            for others in (0, 40):
                while len(background) < others:
                    deploy_bg(f"bg-{len(background)}")
                t: dict[str, list[float]] = {k: [] for k in VARIANTS}
                for i in range(rounds + 1):  # round 0 warms caches and is not counted
                    steps = [
                        (
                            "docker",
                            baseline(i),
                            lambda i=i: subprocess.run(
                                [*docker, "rm", "-f", f"bench-docker-{i}"],
                                capture_output=True,
                                check=True,
                            ),
                        ),
                        (
                            "cli-cpu",
                            ds01_deploy(f"cpu-{i}", "--cpu-only"),
                            lambda i=i: retire(f"cpu-{i}"),
                        ),
                        (
                            "cli-gpu",
                            ds01_deploy(f"gpu-{i}", "--gpus", "1"),
                            lambda i=i: retire(f"gpu-{i}"),
                        ),
                        (
                            "api-cpu",
                            api_deploy(f"acpu-{i}", cpu_only=True),
                            lambda i=i: retire(f"acpu-{i}"),
                        ),
                        (
                            "api-gpu",
                            api_deploy(f"agpu-{i}", gpus=1),
                            lambda i=i: retire(f"agpu-{i}"),
                        ),
                    ]
                    # Rotate the order so no variant always runs right after a cleanup.
                    k = i % len(steps)
                    for key, run_it, clean in steps[k:] + steps[:k]:
                        elapsed = run_it()
                        clean()
                        if i:
                            t[key].append(elapsed)
                base = median_ms(t["docker"])
                print(f"\n{others} other containers, {rounds} rounds (median, ratio to docker):")
                for key, label in VARIANTS.items():
                    ms = median_ms(t[key])
                    ratio = "" if key == "docker" else f" ({ms / base:.2f}×)"
                    print(f"  {label:44} {ms:6.0f} ms{ratio}", flush=True)
                    rows.append((f"{label}, {others} other containers", f"{ms:.0f} ms{ratio}"))

            while len(background) < 50:
                deploy_bg(f"bg-{len(background)}")
            assert len(client.containers()) == 50
            cli = [timed([*ds01, "container", "list"], env=env) for _ in range(rounds + 1)][1:]
            api: list[float] = []
            for _ in range(rounds + 1):
                start = time.perf_counter()
                client.containers()
                api.append(time.perf_counter() - start)
            # The engine call under GET /v1/containers, side by side: with its per-container
            # cache emptied first (= an inspect per container, as before the cache) and warm.
            engine = Engine(host)
            cold: list[float] = []
            warm: list[float] = []
            for _ in range(rounds + 1):
                engine._info_cache = {}
                start = time.perf_counter()
                engine.list_managed()
                cold.append(time.perf_counter() - start)
                start = time.perf_counter()
                engine.list_managed()
                warm.append(time.perf_counter() - start)
            engine.close()
            noop = [timed([*ds01, "--version"], env=env) for _ in range(rounds)]
            print(
                f"\n50 containers (median): ds01 container list {median_ms(cli):.0f} ms; "
                f"GET /v1/containers {median_ms(api[1:]):.0f} ms; "
                f"(`ds01 --version`, CLI start-up alone: {median_ms(noop):.0f} ms); "
                f"Engine.list_managed {median_ms(cold[1:]):.0f} ms with an inspect each, "
                f"{median_ms(warm[1:]):.0f} ms cached"
            )
            rows += [
                ("ds01 container list, 50 containers (CLI)", f"{median_ms(cli):.0f} ms"),
                ("GET /v1/containers, 50 containers (API)", f"{median_ms(api[1:]):.0f} ms"),
                ("ds01 --version (CLI start-up alone)", f"{median_ms(noop):.0f} ms"),
                ("Engine.list_managed, 50, an inspect each", f"{median_ms(cold[1:]):.0f} ms"),
                ("Engine.list_managed, 50, cached", f"{median_ms(warm[1:]):.0f} ms"),
            ]
        finally:
            for name in background:
                with contextlib.suppress(Exception):
                    retire(name)

    print("\n| measurement | median |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--docker-host", default=os.environ.get("DS01_TEST_DOCKER_HOST"))
    args = p.parse_args()
    if not args.docker_host:
        raise SystemExit(
            "name the engine: --docker-host unix:///…/docker.sock or set "
            "DS01_TEST_DOCKER_HOST (scripts/test-docker.sh start DIR)"
        )
    run(args.rounds, args.docker_host)


if __name__ == "__main__":
    main()
