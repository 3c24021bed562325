"""Benchmark: what a user waits for when they type a ds01 read command (issue 14 item 1).

Runs a real ds01d on a simulated machine (bench/alloc.py daemon()) with a few allocations and
events in it, then times, side by side in one run and interleaved round by round, each whole
command as a user types it (a new process every time):

  * the baseline: `python3 -I -c pass` with the distribution's interpreter — the least any
    Python command can cost on this machine — and `nvidia-smi -L` where there is one;
  * `ds01 --version`, and each read command in its `--json` and table forms: `gpu status`,
    `quota`, `access`, `container list`, `container stats`, `events`, and `top --once`.

Reports medians and each command's ratio to the baseline's median in the same run, against the
aims (at most 4x for --json, 6x for tables), with the machine's load before and after.

Usage:  .venv/bin/python bench/cli.py [--rounds 30]
Prints the machine description and a Markdown table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alloc import BIN, CONFIG, NOWHERE, RawClient, compile_ds01, daemon, describe_machine

ROOT = Path(__file__).resolve().parent.parent
MACHINE = ROOT / "examples" / "machines" / "8xH100-mig-mixed.yaml"

JSON_AIM, TABLE_AIM = 4.0, 6.0
READS = [
    ("gpu", "status"),
    ("quota",),
    ("access",),
    ("container", "list"),
    ("container", "stats"),  # issue 18 item 4: from ds01d's samples, no Docker call
    ("events",),
]


def commands(run_dir: Path) -> list[tuple[str, list[str], float | None]]:
    """(label, argv, aim) for the baseline(s) and every ds01 command."""
    out: list[tuple[str, list[str], float | None]] = [
        ("python3 -I -c pass (baseline)", ["/usr/bin/python3", "-I", "-c", "pass"], None)
    ]
    smi = shutil.which("nvidia-smi")
    if smi:
        out.append(("nvidia-smi -L", [smi, "-L"], None))
    ds01 = [str(BIN / "ds01"), "--run-dir", str(run_dir)]
    out.append(("ds01 --version", [str(BIN / "ds01"), "--version"], JSON_AIM))
    for words in READS:
        name = " ".join(words)
        out.append((f"ds01 {name} --json", [*ds01, *words, "--json"], JSON_AIM))
        out.append((f"ds01 {name}", [*ds01, *words], TABLE_AIM))
    # `ds01 top` (issue 17 item 2): as an admin (the bench runs as root) it asks the most.
    out.append(("ds01 top --once --json", [*ds01, "top", "--once", "--json"], JSON_AIM))
    out.append(("ds01 top --once", [*ds01, "top", "--once"], TABLE_AIM))
    return out


def time_once(argv: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return took


def fill(sock: Path) -> None:
    """A few allocations of the bench's user, so quota, status and events have rows."""
    raw = RawClient(str(sock))
    for i, body in enumerate(({"gpus": 1}, {"mig": ["1g.10gb"]}, {"mig": ["3g.40gb"]})):
        status, a = raw.request("POST", "/v1/allocations", {**body, "container": f"bench-{i}"})
        assert status == 201, a
    raw.close()


def main() -> None:
    p = argparse.ArgumentParser(description="ds01 read commands against python3 -I -c pass")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument(
        "--docker-host",
        default=os.environ.get("DS01_TEST_DOCKER_HOST"),
        help="engine for `container list` (default $DS01_TEST_DOCKER_HOST; scripts/test-docker.sh)",
    )
    args = p.parse_args()
    if not args.docker_host:
        raise SystemExit("name an engine: --docker-host or DS01_TEST_DOCKER_HOST")
    config = CONFIG.replace(NOWHERE, args.docker_host)
    compile_ds01()
    head = describe_machine()
    with tempfile.TemporaryDirectory(prefix="ds01-bench-cli-") as tmp:
        base = Path(tmp)
        with daemon(base, MACHINE, config) as sock:
            fill(sock)
            cmds = commands(sock.parent)
            for _, argv, _ in cmds:  # warm-up: page cache, .pyc files
                time_once(argv)
            times: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
            for i in range(args.rounds):
                order = cmds if i % 2 == 0 else list(reversed(cmds))
                for label, argv, _ in order:
                    times[label].append(time_once(argv))
    load_after = " ".join(f"{x:.1f}" for x in os.getloadavg())
    base_ms = statistics.median(times[cmds[0][0]]) * 1000
    print(f"## cli — {time.strftime('%Y-%m-%d')}\n")
    print(f"`bench/cli.py --rounds {args.rounds}`, medians of interleaved rounds.\n")
    print("\n".join(head))
    print(f"- load average after (1, 5, 15 min): {load_after}\n")
    print("| Command | median (ms) | / baseline | aim | met |")
    print("|---|---|---|---|---|")
    for label, _, aim in cmds:
        ms = statistics.median(times[label]) * 1000
        ratio = ms / base_ms
        met = "" if aim is None else ("yes" if ratio <= aim else "**no**")
        aim_text = "" if aim is None else f"≤ {aim:g}×"
        print(f"| `{label}` | {ms:.1f} | {ratio:.2f}× | {aim_text} | {met} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
