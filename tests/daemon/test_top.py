"""`ds01 top` (issue 17 item 2) through the real command, against a real ds01d on a simulated
machine, as real Unix users:

- under a real pseudo-terminal of 80×24, `--once` shows every unit, each on one line of at most
  80 columns; the live view draws frames that fit 80×24, and q or Ctrl-C leaves it with the
  terminal as it was (line editing and echo back on, the main screen back);
- `--json`'s status is exactly `ds01 gpu status --json`, for the same user;
- a user who is no admin never sees the admin sections (users, alerts, health), and under
  `privacy: hide_others` not another user's name; an admin (by group, or root) sees both;
- off a terminal it prints one screen, like --once; the quick path and the long way agree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn
from ds01.inventory.sim import clear_processes
from support import BIN, MACHINES, Daemon, Users, as_user, run_in_pty, short_tmp

LOADGEN = Path(__file__).parent / "loadgen.py"

CONFIG = f"""\
admin_group: {{admins}}
privacy: hide_others
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
gpu:
  sample_interval: 1s
docker:
  host: {NOWHERE}
"""

# The machine's 19 units by their names (examples/machines/8xH100-mig-mixed.yaml).
UNIT_NAME = re.compile(r"^(\d+(?:/\d+\.\d+)?) +H100\b")


@dataclass
class World:
    d: Daemon
    a: str  # holds a GPU
    b: str  # holds nothing, is no admin
    admin: str  # in the admin group (not root)
    drained: str  # the unit root drained


@pytest.fixture
def world(daemon_factory: Any, users: Users) -> Iterator[World]:
    tmp = short_tmp()
    machine = tmp / "machine.yaml"
    shutil.copy(MACHINES / "8xH100-mig-mixed.yaml", machine)
    clear_processes(machine)  # its example pids may be live processes on this host
    admins = users.group("ds01t-topadm")
    a, b, admin = users.add(), users.add(), users.add(groups=(admins,))
    d: Daemon = daemon_factory(config=CONFIG.format(admins=admins), machine=machine)
    r = as_user(
        a,
        [sys.executable, str(LOADGEN), "call", "--socket", str(d.socket), "allocate",
         json.dumps({"gpus": 1, "container": "thesis"})],
    )  # fmt: skip
    assert r.returncode == 0 and "ok" in json.loads(r.stdout), (r.stdout, r.stderr)
    with d.client() as c:
        c.drain("3", "fan noise")
        c.allocate(AllocateIn(cpu_only=True, container="notes"))  # root's, holding no GPU
    yield World(d, a, b, admin, "3")
    shutil.rmtree(tmp, ignore_errors=True)


def top(d: Daemon, *args: str, user: str | None = None, quick: bool = True) -> str:
    """`ds01 top ARGS` as `user` (None: root), on the quick path or the long way."""
    env = {**d.env, "DS01_QUICK": "1" if quick else "0"}
    argv = [str(BIN / "ds01"), "top", *args]
    if user is None:
        r = subprocess.run(
            argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
        )
    else:
        r = as_user(user, argv, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def agree(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Both, taken one right after the other, until they agree (at most 3 times): a sample
    taken between the two may change a time or a utilization."""
    for _ in range(3):
        x, y = first(), second()
        if x == y:
            break
    return x, y


def without_time(top_json: str) -> dict[str, Any]:
    """`top --json` without what ticks between two runs a second apart: when it was taken,
    when the sample was, and when ds01d's loops last ran (sample_interval is 1 s here)."""
    got: dict[str, Any] = json.loads(top_json)
    got.pop("taken_at")
    got["status"].pop("sampled_at")
    if got["health"] is not None:
        got["health"].pop("loops")
    return got


def test_json_status_is_gpu_status_and_users_never_see_admin_sections(world: World) -> None:
    d, a, b = world.d, world.a, world.b
    for user in (a, b):
        mine, status = agree(
            lambda u=user: json.loads(top(d, "--json", user=u))["status"],
            lambda u=user: json.loads(d.cli("gpu", "status", "--json", user=u).stdout),
        )
        assert mine == status
        assert len(status["units"]) == 19
    seen_by_b = top(d, "--json", user=b)
    got = json.loads(seen_by_b)
    assert (got["user"], got["admin"]) == (b, False)
    assert (got["users"], got["alerts"], got["health"]) == (None, None, None)
    assert got["allocations"] == [] and got["events"] == []
    assert a not in seen_by_b  # privacy: hide_others hides a's name from b everywhere
    held = [u for u in got["status"]["units"] if u["state"]]
    assert [(u["name"], u["user"]) for u in held] == [("0", "(hidden)")]

    screen = top(d, "--once", user=b)
    assert a not in screen
    assert "Users" not in screen and "Alerts" not in screen
    row = next(line for line in screen.splitlines() if line.startswith("0 "))
    assert row.split()[-3:] == ["(hidden)", "reserved", "–"], row

    # a sees their own allocation and when it goes back (a reservation no container took).
    seen_by_a = json.loads(top(d, "--json", user=a))
    assert [x["container"] for x in seen_by_a["allocations"]] == ["thesis"]
    row = next(line for line in top(d, "--once", user=a).splitlines() if line.startswith("0 "))
    assert a in row and re.search(r" reserved +\d\d:\d\d unused$", row), row


def test_admins_see_users_and_alerts_by_group_and_as_root(world: World) -> None:
    d, a = world.d, world.a
    by_group = json.loads(top(d, "--json", user=world.admin))
    as_root = json.loads(top(d, "--json"))
    assert by_group["admin"] is True and as_root["admin"] is True
    for got in (by_group, as_root):
        assert got["users"] == [
            {"user": a, "gpueq": 1.0, "units": 1, "active": 0, "held": 0, "reserved": 1,
             "idle": 0, "queued": 0, "gpueq_exact": "1"}
        ]  # fmt: skip
        assert {"kind": "drained", "message": "unit 3 drained: fan noise"} in got["alerts"]
        assert [x["user"] for x in got["allocations"]] == [a]  # not root's CPU-only one
        assert got["health"]["backend"] == "sim"
        assert next(u for u in got["status"]["units"] if u["name"] == "0")["user"] == a
    every = json.loads(d.cli("admin", "alloc", "list", "--json").stdout)
    assert sorted(x["container"] for x in every) == ["notes", "thesis"]
    screen = top(d, "--once", user=world.admin)
    assert "Users" in screen and "Alerts (" in screen
    assert "! unit 3 drained: fan noise" in screen
    assert any(line.split()[:3] == [a, "1", "1"] for line in screen.splitlines())


def test_quick_path_and_long_way_agree(world: World) -> None:
    d = world.d
    for user in (world.b, world.admin):
        quick, long_way = agree(
            lambda u=user: without_time(top(d, "--json", user=u)),
            lambda u=user: without_time(top(d, "--json", user=u, quick=False)),
        )
        assert quick == long_way
        # The screen, but its first line (the clock and the sample's age).
        quick_s, long_s = agree(
            lambda u=user: top(d, "--once", user=u).split("\n", 1)[1],
            lambda u=user: top(d, "--once", user=u, quick=False).split("\n", 1)[1],
        )
        assert quick_s == long_s


def test_off_a_terminal_it_prints_one_screen_and_checks_its_interval(world: World) -> None:
    d = world.d
    out = top(d, user=world.b)  # stdout is a pipe: one screen, as --once, then exit 0
    assert out.startswith(f"ds01 top · {world.b} · ") and "GPU units (sim)" in out
    r = as_user(world.b, [str(BIN / "ds01"), "top", "--interval", "0"], env=d.env)
    assert r.returncode == 2 and "--interval" in r.stderr and r.stdout == ""


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_once_under_an_80x24_terminal_shows_every_unit_on_one_line(world: World) -> None:
    d = world.d
    rc, out = run_in_pty(
        world.b, [str(BIN / "ds01"), "top", "--once"], d.env, steps=[], size=(24, 80)
    )
    assert rc == 0, out
    lines = out.replace("\r\n", "\n").rstrip("\n").split("\n")
    assert ANSI.search(out) is None  # --once draws no live screen
    assert [line for line in lines if len(line) > 80] == [], out
    names = [m.group(1) for line in lines if (m := UNIT_NAME.match(line))]
    assert len(names) == 19 == len(set(names)), out


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_live_view_fits_80x24_and_gives_the_terminal_back(world: World, key: bytes) -> None:
    d = world.d
    # stty after top: what the terminal is left like (line editing and echo on again). The
    # terminal is made the session's controlling one (setsid -c), so that Ctrl-C is SIGINT;
    # bash goes on after a command that handled SIGINT and exited.
    script = f"{BIN / 'ds01'} top --interval 0.5; echo rc=$?; stty -a"
    argv = ["setsid", "-w", "-c", "bash", "-c", script]
    rc, out = run_in_pty(world.admin, argv, d.env, steps=[(b"GPU units (sim)", key)], size=(24, 80))
    assert rc == 0, out
    assert "rc=0" in out
    assert out.index("\x1b[?1049h") < out.index("\x1b[?1049l")  # alternate screen, then back
    modes = out.rsplit("rc=0", 1)[1].split()
    assert "icanon" in modes and "echo" in modes, out  # not -icanon, -echo
    # Whole frames: Ctrl-C may cut the one being drawn (the terminal is given back anyway).
    frames = [f for f in out.split("\x1b[H")[1:] if "\x1b[J" in f]
    assert frames, out
    for frame in frames:
        text = frame.split("\x1b[J", 1)[0].replace("\x1b[K", "")
        lines = text.replace("\r\n", "\n").split("\n")
        assert len(lines) <= 24, text
        assert [line for line in lines if len(line) > 80] == [], text
        assert lines[0].startswith(f"ds01 top · {world.admin} (admin) · ")
        names = [m.group(1) for line in lines if (m := UNIT_NAME.match(line))]
        # 19 units, 2 header lines, title and column names: the units fill the screen, the
        # other sections give way.
        assert len(names) == 19, text


def test_live_view_scrolls_the_units_with_j_and_the_down_arrow(world: World) -> None:
    d = world.d
    rc, out = run_in_pty(
        world.b,
        [str(BIN / "ds01"), "top", "--interval", "30"],  # no refresh: each frame is a key's
        d.env,
        steps=[
            (b"GPU units (sim)", b"j"),
            (b"GPU units (sim) from unit 1 ", b"\x1b[B"),  # ↓
            (b"GPU units (sim) from unit 2 ", b"q"),
        ],
        size=(24, 80),
    )
    assert rc == 0, out
    frames = [f.split("\x1b[J", 1)[0] for f in out.split("\x1b[H")[1:] if "\x1b[J" in f]
    firsts = []
    for frame in frames:
        lines = frame.replace("\x1b[K", "").replace("\r\n", "\n").split("\n")
        firsts.append(next(m.group(1) for line in lines if (m := UNIT_NAME.match(line))))
    assert firsts == ["0", "1", "2"], firsts


def test_live_view_outlives_a_daemon_restart(world: World) -> None:
    """ds01d stops under a live view: the view stays, saying ds01d did not answer, and shows
    what ds01d says again once it is back (here: a unit drained after the restart)."""
    d = world.d

    def stop() -> bytes:
        d.stop()
        return b" "  # redraw now: ask again

    def start_and_drain() -> bytes:
        d.start()
        with d.client() as c:
            c.drain("2", "after restart")
        return b" "

    rc, out = run_in_pty(
        world.admin,
        [str(BIN / "ds01"), "top", "--interval", "30"],  # no refresh: each frame is a key's
        d.env,
        steps=[
            (b"GPU units (sim)", stop),
            (b"ds01d did not answer at ", start_and_drain),
            (b"unit 2 drained: after restart", b"q"),
        ],
        size=(50, 100),  # room for the alerts under the 19 units
    )
    assert rc == 0, out
    frames = [f.split("\x1b[J", 1)[0] for f in out.split("\x1b[H")[1:] if "\x1b[J" in f]
    assert len(frames) == 3, frames
    notes = ["ds01d did not answer at " in f for f in frames]
    assert notes == [False, True, False]
    assert "GPU units (sim)" in frames[1]  # the last screen stays under the note
    assert "after restart" in frames[2]


# GET on ds01d's socket as a user: the status and the JSON body.
_GET = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
head = f"GET {sys.argv[2]} HTTP/1.1\\r\\nHost: ds01d\\r\\nConnection: close\\r\\n\\r\\n"
s.sendall(head.encode())
raw = b""
while chunk := s.recv(65536):
    raw += chunk
head, _, body = raw.partition(b"\\r\\n\\r\\n")
print(json.dumps({"status": int(head.split()[1]), "body": json.loads(body)}))
"""


def get(d: Daemon, path: str, user: str | None) -> tuple[int, Any]:
    argv = [sys.executable, "-c", _GET, str(d.socket), path]
    r = as_user(user, argv) if user else subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    return got["status"], got["body"]


def test_one_answer_holds_only_what_the_caller_may_ask_for_one_request_at_a_time(
    world: World,
) -> None:
    """GET /v1/top (what the quick path asks) is each endpoint's own answer to the same caller:
    a user who is no admin gets no admin part and, under hide_others, nobody else's name;
    an admin gets everyone's allocations and the admin parts."""
    d = world.d
    for user in (world.a, world.b):
        status, body = get(d, "/v1/top", user)
        assert status == 200
        assert body["admin_parts"] is False
        assert (body["health"], body["host_processes"], body["orphans"]) == (None, None, None)
        assert body["whoami"]["user"] == user and body["whoami"]["admin"] is False
        mine = get(d, "/v1/allocations?gpus=1", user)[1]
        assert [a["id"] for a in body["allocations"]] == [a["id"] for a in mine]
        assert {a["user"] for a in body["allocations"]} <= {user}
        holders = {u["user"] for u in body["status"]["units"]} - {None}
        assert holders == ({user} if user == world.a else {"(hidden)"})
        assert body["status"] == get(d, "/v1/gpu/status", user)[1] | {
            "sampled_at": body["status"]["sampled_at"]
        }
        assert world.admin not in json.dumps(body) and "root" not in json.dumps(body["events"])
    assert len(get(d, "/v1/top", world.a)[1]["allocations"]) == 1  # a's GPU
    assert get(d, "/v1/top", world.b)[1]["allocations"] == []

    for user in (world.admin, None):  # by group, and root
        status, body = get(d, "/v1/top", user)
        assert status == 200 and body["admin_parts"] is True
        assert {a["user"] for a in body["allocations"]} == {world.a}  # root's holds no GPU
        assert body["health"]["status"] == "ok"
        assert body["host_processes"] == [] and body["orphans"] == []

    # A bad number of events is the whole answer's error, as /v1/events would say it.
    for bad in ("0", "x", "1001", "-1"):
        status, body = get(d, f"/v1/top?events={bad}", world.b)
        assert status == 400 and body["error"]["kind"] == "usage", body
