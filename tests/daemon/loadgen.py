"""Helpers for the daemon tests that must run outside pytest: load processes and one-shot calls.

Run as a script (as root or, through setpriv, as a real Unix user):

    python tests/daemon/loadgen.py cycles --socket RUN/api.sock --prefix p07 --seed 7 \
        --cycles 200 --profiles 1g.10gb,3g.40gb --deadline 120 [--retry] [--quota-every 10]
    python tests/daemon/loadgen.py call --socket RUN/api.sock allocate '{"gpus": 1}'

`cycles`: each cycle allocates one random request (gpus=1..2, one or two MIG profiles, or
gpueq=X) for a container name no other cycle uses, sometimes reads the quota, then releases it.
Refusals are expected and counted by reason. Anything else is an error, and so is an answer that
names another user than the one this process runs as (identity under load). With --retry (the
crash test), a request cut off by a dead daemon is retried with backoff until the daemon is back;
an allocate whose answer was lost is found again by its container name, because only the daemon
knows whether it was committed before the kill. Prints one JSON object; exits 0 when every cycle
ended (released, refused, or cut off before anything was committed), 1 otherwise.

`call`: one typed-client call, printed as {"ok": …} or {"error": {"type", "what", "reason"}}, so
a test can act as a real user without a CLI command for it.

The test process imports this module too: the load plan and its config (`PLAN`, `load_config`,
`caps_for`), starting and collecting the processes (`start_load`, `wait_all`), and the read-only
checks of the state database (`scan`, `story`, `constraint_sql`, `Checker`), which open the file
with mode=ro and never write.

Must not import pytest or the test modules: it runs as a plain user from a plain interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

from ds01.api.schemas import AllocateIn, AllocationOut
from ds01.client import Client
from ds01.errors import DaemonUnavailable, Ds01Error, Refusal

GPUEQ_CHOICES = ("1/7", "2/7", "3/7", "0.5", "1")


class Deadline(Exception):
    """The process ran out of time: the test reports it as cycles not done."""


@dataclass
class Stats:
    user: str
    prefix: str
    cycles: int = 0
    allocated: int = 0
    released: int = 0
    released_by_daemon: int = 0  # the reservation expired before our release came
    refused: Counter[str] = field(default_factory=Counter)
    interrupted: int = 0  # allocate cut off by a crash, and nothing was committed
    recovered: int = 0  # allocate cut off by a crash, committed, found by its name
    retries: int = 0
    quota_reads: int = 0
    hung: int = 0  # a request that timed out instead of answering
    errors: list[str] = field(default_factory=list)
    allocation_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "prefix": self.prefix,
            "cycles": self.cycles,
            "allocated": self.allocated,
            "released": self.released,
            "released_by_daemon": self.released_by_daemon,
            "refused": dict(self.refused),
            "interrupted": self.interrupted,
            "recovered": self.recovered,
            "retries": self.retries,
            "quota_reads": self.quota_reads,
            "hung": self.hung,
            "errors": self.errors,
            "allocation_ids": self.allocation_ids,
        }


def random_request(rng: random.Random, profiles: list[str], container: str) -> AllocateIn:
    roll = rng.random()
    if roll < 0.35:
        return AllocateIn(gpus=rng.randint(1, 2), container=container)
    if roll < 0.8:
        mig = [rng.choice(profiles) for _ in range(1 if rng.random() < 0.8 else 2)]
        return AllocateIn(mig=mig, container=container)
    return AllocateIn(gpueq=rng.choice(GPUEQ_CHOICES), container=container)


def timed_out(err: DaemonUnavailable) -> bool:
    return "did not answer in time" in err.what  # the client's words for a hung daemon


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.me = pwd.getpwuid(os.getuid()).pw_name
        self.stats = Stats(user=self.me, prefix=args.prefix)
        self.rng = random.Random(args.seed)
        self.deadline = time.monotonic() + args.deadline
        self.client = Client(args.socket, timeout=args.timeout)

    def check_user(self, what: str, user: str) -> None:
        if user != self.me:
            self.stats.errors.append(f"{what}: answer names user {user!r}, I am {self.me!r}")

    def retrying(self, call: Any) -> Any:
        """Call until it answers; with --retry, a dead daemon means wait and try again."""
        delay = 0.05
        while True:
            try:
                return call()
            except DaemonUnavailable as err:
                if timed_out(err):
                    self.stats.hung += 1
                    raise
                if not self.args.retry:
                    raise
            if time.monotonic() + delay > self.deadline:
                raise Deadline()
            self.stats.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def find_by_name(self, container: str) -> AllocationOut | None:
        mine = self.retrying(self.client.allocations)
        hits = [a for a in mine if a.container == container]
        return hits[0] if hits else None

    def allocate(self, req: AllocateIn) -> AllocationOut | None:
        """The allocation, or None when refused or never committed."""
        assert req.container is not None
        try:
            a: AllocationOut = self.client.allocate(req)
        except Refusal as r:
            self.stats.refused[r.reason.value] += 1
            return None
        except DaemonUnavailable as err:
            if timed_out(err):
                self.stats.hung += 1
                raise
            if not self.args.retry:
                raise
            self.stats.retries += 1
            # Committed or not? Ask the daemon once it is back; its answer is the truth.
            found = self.find_by_name(req.container)
            if found is None:
                self.stats.interrupted += 1
                return None
            self.stats.recovered += 1
            a = found
        self.check_user("allocate", a.user)
        if a.container != req.container:
            self.stats.errors.append(f"allocate: container {a.container!r} != {req.container!r}")
        self.stats.allocated += 1
        self.stats.allocation_ids.append(a.id)
        return a

    def release(self, a: AllocationOut) -> None:
        out: AllocationOut = self.retrying(lambda: self.client.release(a.id, reason="loadgen"))
        self.check_user("release", out.user)
        if out.state != "released":
            self.stats.errors.append(f"release {a.id}: state {out.state}")
        elif out.release_reason == "loadgen":
            self.stats.released += 1
        elif out.release_reason == "reservation_expired":
            self.stats.released_by_daemon += 1
        else:
            self.stats.errors.append(f"release {a.id}: reason {out.release_reason!r}")

    def quota(self) -> None:
        q = self.retrying(self.client.quota)
        self.stats.quota_reads += 1
        self.check_user("quota", q.user)

    def run(self) -> Stats:
        profiles = [p for p in self.args.profiles.split(",") if p]
        try:
            for i in range(self.args.cycles):
                if time.monotonic() > self.deadline:
                    raise Deadline()
                req = random_request(self.rng, profiles, f"{self.args.prefix}-{i}")
                a = self.allocate(req)
                if a is not None:
                    if self.args.quota_every and i % self.args.quota_every == 0:
                        self.quota()
                    self.release(a)
                self.stats.cycles += 1
        except Deadline:
            self.stats.errors.append(f"deadline: {self.stats.cycles} cycles done")
        except Ds01Error as err:
            self.stats.errors.append(f"{type(err).__name__}: {' | '.join(err.lines())}")
        finally:
            self.client.close()
        return self.stats


def call(socket: str, method: str, args: dict[str, Any], headers: dict[str, str]) -> Any:
    """One client call; the result as JSON data. Errors propagate as Ds01Error."""
    with Client(socket) as c:
        if method == "allocate":
            return c.allocate(AllocateIn(**args)).model_dump(mode="json")
        if method == "release":
            return c.release(**args).model_dump(mode="json")
        if method == "allocation":
            return c.allocation(**args).model_dump(mode="json")
        if method == "allocations":
            return [a.model_dump(mode="json") for a in c.allocations(**args)]
        if method == "events":
            return [e.model_dump(mode="json") for e in c.events(**args)]
        if method == "drain":
            return c.drain(**args)
        if method in ("whoami", "quota", "gpu_status", "health"):
            return getattr(c, method)().model_dump(mode="json")
        if method == "raw":  # {"method": "POST", "path": …, "json": …}: bypasses the schemas
            with httpx.Client(
                transport=httpx.HTTPTransport(uds=socket), base_url="http://ds01d"
            ) as h:
                r = h.request(args["method"], args["path"], json=args.get("json"), headers=headers)
                return {"status": r.status_code, "body": r.json()}
    raise SystemExit(f"unknown method {method}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cycles", help="allocate/release cycles")
    c.add_argument("--socket", required=True)
    c.add_argument("--prefix", required=True, help="container names are PREFIX-<cycle>")
    c.add_argument("--seed", default="0", help="any text; the same seed, the same requests")
    c.add_argument("--cycles", type=int, default=200)
    c.add_argument("--profiles", default="", help="MIG profiles on the machine, comma-separated")
    c.add_argument("--deadline", type=float, default=120.0, help="seconds for all cycles")
    c.add_argument("--timeout", type=float, default=20.0, help="seconds for one request")
    c.add_argument("--quota-every", type=int, default=0, help="read the quota every N cycles")
    c.add_argument("--retry", action="store_true", help="wait out a dead daemon")
    o = sub.add_parser("call", help="one client call, as JSON")
    o.add_argument("--socket", required=True)
    o.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    o.add_argument("method")
    o.add_argument("args", nargs="?", default="{}")
    args = p.parse_args(argv)
    if args.cmd == "call":
        headers = dict(h.split(":", 1) for h in args.header)
        try:
            result = call(args.socket, args.method, json.loads(args.args), headers)
            out: dict[str, Any] = {"ok": result}
        except Ds01Error as err:
            reason = err.reason.value if isinstance(err, Refusal) else None
            out = {"error": {"type": type(err).__name__, "what": err.what, "reason": reason}}
        sys.stdout.write(json.dumps(out) + "\n")
        return 0
    stats = Runner(args).run()
    sys.stdout.write(json.dumps(stats.to_json()) + "\n")
    done = stats.cycles == args.cycles
    return 0 if done and not stats.errors and not stats.hung else 1


# ---- the load, as the tests start it ---------------------------------------------------------

PROCESSES = 32
CYCLES = 200
PROFILES = "1g.10gb,2g.20gb,3g.40gb,4g.40gb"  # every MIG profile on 8xH100-mig-mixed.yaml
DEADLINE_S = 300  # per process; only there so that a hang fails instead of waiting forever
NOWHERE = "unix:///nonexistent/ds01-test-docker.sock"  # never the host's engine
# Who runs how many load processes: two users share a group with an aggregate cap and a
# one-unit limit, one user has the defaults, and root has its own override.
PLAN = (("root", 20), ("ua", 4), ("ub", 4), ("uc", 4))
# The refusals the load may get (and, over 6,400 cycles, does get).
LOAD_REASONS = frozenset(
    {"max_gpueq", "max_containers", "max_units_per_container", "group_max_gpueq", "no_capacity"}
)


def load_config(admin_group: str, lab_group: str, reservation_timeout: str = "2m") -> str:
    return f"""\
admin_group: {admin_group}
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
groups:
  lab:
    unix_group: {lab_group}
    max_gpueq: 1.5
    max_units_per_container: 1
    max_gpueq_total: 2
users:
  root:
    max_gpueq: 3
    max_containers: 6
allocation:
  reservation_timeout: {reservation_timeout}
docker:
  host: {NOWHERE}
"""


def caps_for(names: dict[str, str]) -> Caps:
    """load_config's limits, written out per user (never resolved through ds01)."""
    ua, ub, uc = names["ua"], names["ub"], names["uc"]
    return Caps(
        max_gpueq={"root": Fraction(3), ua: Fraction(3, 2), ub: Fraction(3, 2), uc: Fraction(2)},
        max_containers={"root": 6, ua: 3, ub: 3, uc: 3},
        max_units={"root": 2, ua: 1, ub: 1, uc: 2},
        groups={"lab": (frozenset({ua, ub}), Fraction(2))},
    )


@dataclass
class Proc:
    user: str
    prefix: str
    popen: subprocess.Popen[str]
    stats: dict[str, Any] | None = None
    stderr: str = ""


def user_env(user: str) -> dict[str, str]:
    pw = pwd.getpwnam(user)
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def spawn(user: str, argv: list[str]) -> subprocess.Popen[str]:
    """Start this script as `user`: root directly, anyone else through setpriv with their
    groups (the daemon learns who it is from the socket, as for any user)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    if user != "root":
        pw = pwd.getpwnam(user)
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *cmd]
    return subprocess.Popen(
        cmd, env=user_env(user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def start_load(socket: Path, names: dict[str, str], *, retry: bool, tag: str) -> list[Proc]:
    """PLAN's processes, each with its own container prefix TAG<nn> and seed."""
    procs: list[Proc] = []
    n = 0
    for role, count in PLAN:
        user = names.get(role, role)
        for _ in range(count):
            prefix = f"{tag}{n:02d}"
            argv = [
                "cycles",
                "--socket", str(socket),
                "--prefix", prefix,
                "--seed", f"{n}{tag}",
                "--cycles", str(CYCLES),
                "--profiles", PROFILES,
                "--deadline", str(DEADLINE_S),
                "--quota-every", "10",
            ]  # fmt: skip
            procs.append(Proc(user, prefix, spawn(user, [*argv, "--retry"] if retry else argv)))
            n += 1
    return procs


def wait_all(procs: list[Proc], timeout: float) -> None:
    """Collect every process's JSON; kill the rest when the time is up (a failure)."""
    end = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.popen.communicate(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.popen.poll() is None:
                    q.popen.kill()
            out, err = p.popen.communicate()
        p.stderr = err
        lines = out.strip().splitlines()
        p.stats = json.loads(lines[-1]) if lines else None


def unfinished(procs: list[Proc]) -> list[str]:
    """Processes that failed, hung, saw an error, or did not end every cycle."""
    return [
        f"{p.prefix} ({p.user}): rc={p.popen.returncode} stats={p.stats} stderr={p.stderr[-800:]}"
        for p in procs
        if p.popen.returncode != 0
        or p.stats is None
        or p.stats["errors"]
        or p.stats["hung"]
        or p.stats["cycles"] != CYCLES
    ]


def refusals_seen(procs: list[Proc]) -> Counter[tuple[str, str]]:
    """(user, reason) → refusals the clients were told about."""
    seen: Counter[tuple[str, str]] = Counter()
    for p in procs:
        for reason, n in (p.stats or {}).get("refused", {}).items():
            seen[(p.user, reason)] += n
    return seen


def summary(procs: list[Proc], scans: int) -> str:
    """One line for the log: what the load did."""
    total: Counter[str] = Counter()
    for p in procs:
        if p.stats:
            total.update(p.stats["refused"])
            for key in ("cycles", "allocated", "interrupted", "recovered", "retries"):
                total[key] += p.stats[key]
    return f"load: {dict(total)}; checker scans: {scans}"


class Checker:
    """Scans the database read-only, over and over, while the load runs (a thread)."""

    def __init__(self, db: Path, caps: Caps) -> None:
        self.db = db
        self.caps = caps
        self.problems: list[str] = []
        self.scans = 0
        self.unreadable = 0  # scans SQLite refused (e.g. a WAL left by kill -9 awaits recovery)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checker", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.problems += scan(self.db, self.caps)
                self.scans += 1
            except sqlite3.OperationalError:
                # A read-only reader cannot run WAL recovery after a kill -9; the daemon does
                # on restart. The tests scan again at the end, where a failure is a failure.
                self.unreadable += 1
            self._stop.wait(0.25)

    def __enter__(self) -> Checker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


# ---- read-only checks of the state database (used by the test process) ------------------------

# The schema's constraint, as SQLite stores it (whitespace collapsed). Written out here, not read
# from the migrations, so that a change to the constraint shows up as a failing test.
CONSTRAINT_SQL = (
    "CREATE UNIQUE INDEX one_live_allocation_per_unit ON allocation_units (unit_uuid)"
    " WHERE live = 1"
)

# The allocation state machine as the audit log must tell it: event action → actions that may
# follow it for the same allocation. Written out independently of ds01.model.allocation.
NEXT_ACTIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"reserved"}),
    "reserved": frozenset({"activated", "released"}),
    "activated": frozenset({"held", "released"}),
    "held": frozenset({"activated", "released"}),
    "released": frozenset(),
}
STATE_AFTER = {
    "reserved": "reserved",
    "activated": "active",
    "held": "held",
    "released": "released",
}


@dataclass(frozen=True)
class Caps:
    """The limits the load's config sets, written out by the test (never resolved by ds01)."""

    max_gpueq: dict[str, Fraction]  # user → cap
    max_containers: dict[str, int]
    max_units: dict[str, int]
    groups: dict[str, tuple[frozenset[str], Fraction]] = field(default_factory=dict)


def connect_ro(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def scan(db: Path, caps: Caps | None) -> list[str]:
    """Problems in one consistent read of the database: a unit in two live allocations (by a
    scan in Python, and by ds01's own double_allocations()), a `live` flag out of step with its
    allocation's state, and any user or group over the caps."""
    from ds01.store.allocations import double_allocations

    conn = connect_ro(db)
    try:
        conn.execute("BEGIN")
        allocs = conn.execute("SELECT id, user, state FROM allocations").fetchall()
        links = conn.execute(
            "SELECT allocation_id, unit_uuid, live FROM allocation_units"
        ).fetchall()
        weight = {u: Fraction(w) for u, w in conn.execute("SELECT uuid, gpueq FROM units")}
        theirs = double_allocations(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    problems: list[str] = []
    state = {a: s for a, _, s in allocs}
    owner = {a: u for a, u, _ in allocs}
    holders: dict[str, list[int]] = defaultdict(list)
    units_of: dict[int, list[str]] = defaultdict(list)
    for aid, unit, live in links:
        if aid not in state:
            problems.append(f"allocation_units names allocation {aid}, which does not exist")
            continue
        is_live = state[aid] != "released"
        if bool(live) != is_live:
            problems.append(f"allocation {aid} ({state[aid]}): unit {unit} has live={live}")
        if is_live:
            holders[unit].append(aid)
            units_of[aid].append(unit)
    for unit, aids in sorted(holders.items()):
        if len(aids) > 1:
            problems.append(f"unit {unit} is in live allocations {sorted(aids)}")
    if theirs:
        problems.append(f"double_allocations() reports {theirs}")
    if caps is None:
        return problems
    used: dict[str, Fraction] = defaultdict(Fraction)
    containers: Counter[str] = Counter()
    for aid, units in units_of.items():
        used[owner[aid]] += sum((weight[u] for u in units), Fraction(0))
        if len(units) > caps.max_units.get(owner[aid], 10**6):
            problems.append(f"allocation {aid} has {len(units)} units")
    for _aid, user, s in allocs:
        if s != "released":
            containers[user] += 1
    for user, g in used.items():
        if g > caps.max_gpueq.get(user, Fraction(10**6)):
            problems.append(f"{user} holds {g} gpueq, over {caps.max_gpueq[user]}")
    for user, n in containers.items():
        if n > caps.max_containers.get(user, 10**6):
            problems.append(f"{user} has {n} live allocations, over {caps.max_containers[user]}")
    for group, (members, cap) in caps.groups.items():
        total = sum((used[m] for m in members), Fraction(0))
        if total > cap:
            problems.append(f"group {group} holds {total} gpueq, over {cap}")
    return problems


def story(db: Path) -> list[str]:
    """Problems in the audit log's account of allocations: every allocation's events, in order,
    must be a path through NEXT_ACTIONS that starts at 'reserved' and ends in the state the row
    has (with the release reason the row has); no event may name an allocation that does not
    exist, and refusals name none."""
    conn = connect_ro(db)
    try:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT id, user, state, release_reason FROM allocations").fetchall()
        events = conn.execute(
            "SELECT id, allocation_id, action, reason, user FROM events WHERE kind = 'alloc'"
            " ORDER BY id"
        ).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    problems: list[str] = []
    allocs = {r[0]: r for r in rows}
    seq: dict[int, list[tuple[str, str, str | None]]] = defaultdict(list)
    for eid, aid, action, reason, user in events:
        if action == "refused":
            if aid is not None:
                problems.append(f"event {eid}: a refusal names allocation {aid}")
            continue
        if aid is None or aid not in allocs:
            problems.append(f"event {eid} ({action}) names allocation {aid}, which does not exist")
            continue
        seq[aid].append((action, reason, user))
    for aid, user, state, release_reason in rows:
        last: str | None = None
        for action, reason, ev_user in seq.get(aid, []):
            if action not in NEXT_ACTIONS.get(last, frozenset()):
                problems.append(f"allocation {aid}: '{action}' after '{last}'")
            if ev_user != user:
                problems.append(f"allocation {aid} of {user}: '{action}' event names {ev_user}")
            last = action
            if action == "released" and reason != release_reason:
                problems.append(
                    f"allocation {aid}: released for {reason}, the row says {release_reason}"
                )
        if last is None:
            problems.append(f"allocation {aid} has no events")
        elif STATE_AFTER.get(last) != state:
            problems.append(f"allocation {aid} is {state}, its last event is '{last}'")
    return problems


def constraint_sql(db: Path) -> str | None:
    conn = connect_ro(db)
    try:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index'"
            " AND name = 'one_live_allocation_per_unit'"
        ).fetchone()
    finally:
        conn.close()
    return " ".join(str(row[0]).split()) if row else None


def integrity(db: Path) -> list[str]:
    conn = connect_ro(db)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
