"""The quick path of `ds01` (cli/quick.py, issue 14): the --json forms of the read commands
answer without loading the full command line — and print exactly what the full command line
prints, byte for byte, with the same exit status; everything else, and every failure, goes the
long way. Real ds01d, real users, real Docker engine; DS01_QUICK=0 is the long way."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.api.schemas import AllocateIn
from ds01.cli.quick import answer
from ds01.unixhttp import get_json
from support import BIN, TEST_IMAGE, Daemon, Users, as_user, short_tmp

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
"""

ANSWERED = [
    ("gpu", "status", "--json"),
    ("gpu", "status"),  # the table too: what `watch -n1 ds01 gpu status` runs
    ("gpu", "status", "--wide"),
    ("quota", "--json"),
    ("access", "--json"),
    ("container", "list", "--json"),
    ("container", "list", "--all", "--json"),
    ("container", "list", "--json", "--all"),
    ("events", "--json"),
    ("events", "--kind", "alloc", "--limit", "5", "--json"),
    ("events", "--limit", "007", "--json"),
    ("quota",),  # and the tables, drawn by the same functions both ways
    ("access",),
    ("container", "list"),
    ("container", "list", "--all"),
    ("events",),
    ("events", "--kind", "alloc"),
    ("queue", "--json"),
    ("queue",),
]
LONG_WAY = [
    ("queue", "explain", "1"),  # an argument to check: the long way
    ("queue", "cancel", "1"),
    ("gpu", "status", "--json", "--wide"),  # refused: --wide is for tables
    ("gpu", "status", "--sim", "8xH100-mig-mixed"),
    ("events", "--json", "--kind", "bogus"),  # refused with the list of kinds
    ("events", "--json", "--limit", "0"),
    ("events", "--json", "--since", "1h"),
    ("events", "--since", "1h"),
    ("quota", "--wide"),
    ("quota", "--json", "--json"),
    ("quota", "--json", "--help"),
    ("container", "list", "--json", "--wide"),
    ("container", "inspect", "q1", "--json"),
]


def run(
    d: Daemon, args: tuple[str, ...], quick: bool, user: str | None = None
) -> tuple[int, str, str]:
    env = {**d.env, "DS01_QUICK": "1" if quick else "0"}
    argv = [str(BIN / "ds01"), *args]
    if user is None:
        r = subprocess.run(
            argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
        )
    else:
        r = as_user(user, argv, env=env)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def env(docker_host: str) -> Iterator[tuple[Daemon, str]]:
    """A daemon on the private engine with a container, two allocations and their events, and a
    user of its own (module scope: one daemon for every case)."""
    from support import MACHINES

    users = Users()
    d = Daemon(short_tmp(), CONFIG, MACHINES / "8xH100-mig-mixed.yaml", docker_host)
    try:
        d.start()
        user = users.add()
        with d.client() as c:
            c.allocate(AllocateIn(gpus=1, container="quick-a"))
            c.allocate(AllocateIn(mig=["1g.10gb"], container="quick-b"))
        r = d.cli(
            "container", "deploy", "q1", "--image", TEST_IMAGE, "--cpu-only", "--detach",
            "--", "sh", "-c", 'trap "exit 0" TERM; while :; do sleep 1; done',
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        # Stopped: its row shows no uptime, which would tick between the two ways' runs.
        assert d.cli("container", "stop", "q1").returncode == 0
        yield d, user
        d.cli("container", "retire", "q1")
    finally:
        d.stop()
        users.cleanup()


pytestmark = [pytest.mark.docker, pytest.mark.root]


def agree(first: Callable[[], object], second: Callable[[], object]) -> tuple[object, object]:
    """Both answers, taken one right after the other, until they agree (at most 3 times): the
    tables show times (an uptime in seconds, a clock in minutes), which may tick between two
    runs; they cannot tick between every pair of runs, while a real difference stays."""
    for _ in range(3):
        a, b = first(), second()
        if a == b:
            break
    return a, b


@pytest.mark.parametrize("args", ANSWERED, ids=" ".join)
def test_the_quick_path_answers_exactly_as_the_long_way(
    env: tuple[Daemon, str], args: tuple[str, ...]
) -> None:
    d, _ = env
    quick, long_way = agree(
        lambda: answer(["--run-dir", str(d.run_dir), *args]),
        lambda: run(d, args, quick=False),
    )
    assert quick is not None, "the quick path did not answer"
    assert isinstance(long_way, tuple)
    code, out, err = long_way
    assert (code, err) == (0, "")
    assert quick == (out, "")
    if "--json" in args:
        assert json.loads(out) or args[0] in ("container", "events")
    elif args[0] == "gpu":
        assert out.startswith("GPU units (sim)\nUnit ") and "19 units, " in out
    else:
        assert out.strip() and "No " not in out
    # And through the installed command.
    quick_cli, long_cli = agree(lambda: run(d, args, quick=True), lambda: run(d, args, quick=False))
    assert quick_cli == long_cli and isinstance(quick_cli, tuple) and quick_cli[0] == 0


@pytest.mark.parametrize("args", ANSWERED, ids=" ".join)
def test_a_user_gets_the_same_both_ways(env: tuple[Daemon, str], args: tuple[str, ...]) -> None:
    d, user = env
    quick, long_way = agree(
        lambda: run(d, args, quick=True, user=user), lambda: run(d, args, quick=False, user=user)
    )
    assert quick == long_way
    assert isinstance(long_way, tuple)
    if "--all" not in args:
        assert long_way[0] == 0, long_way
    else:  # not an admin: refused the same way, with the same words
        assert long_way[0] == 1 and "admin" in long_way[2], long_way


@pytest.mark.parametrize("args", LONG_WAY, ids=" ".join)
def test_everything_else_goes_the_long_way(env: tuple[Daemon, str], args: tuple[str, ...]) -> None:
    d, user = env
    assert answer(["--run-dir", str(d.run_dir), *args]) is None
    quick, long_way = agree(
        lambda: run(d, args, quick=True, user=user), lambda: run(d, args, quick=False, user=user)
    )
    assert quick == long_way


def test_a_refusal_from_the_daemon_goes_the_long_way(env: tuple[Daemon, str]) -> None:
    """A user asking for someone else's events: ds01d answers 403, which the quick path does
    not print; the long way asks again and explains, with its exit status."""
    d, user = env
    args = ("events", "--user", "root", "--json")
    long_way = run(d, args, quick=False, user=user)
    assert long_way[0] == 1 and long_way[1] == "" and "admin" in long_way[2], long_way
    assert run(d, args, quick=True, user=user) == long_way


def test_no_daemon_goes_the_long_way(tmp_path: Path) -> None:
    args = ["--run-dir", str(tmp_path), "quota", "--json"]
    assert answer(args) is None
    r = subprocess.run([str(BIN / "ds01"), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "ds01d" in r.stderr, r.stderr


def test_a_config_that_runs_containers_through_slurm_goes_the_long_way(
    env: tuple[Daemon, str], tmp_path: Path
) -> None:
    """With `cluster.backend: slurm` containers, quota and queue are SLURM's (cli/slurmjobs.py):
    a ds01d on the same node must not answer them on the quick path."""
    from ds01.cli.quick import deploy_plan

    d, _ = env
    local = tmp_path / "local.yaml"
    local.write_text(CONFIG)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CONFIG + 'cluster:\n  backend: "slurm"\n')
    deploy = ["container", "deploy", "x", "--image", "img", "--detach"]
    for words in (["container", "list", "--json"], ["quota", "--json"], ["queue"]):
        assert answer(["--config", str(local), "--run-dir", str(d.run_dir), *words]) is not None
        assert answer(["--config", str(cluster), "--run-dir", str(d.run_dir), *words]) is None
    assert deploy_plan(["--config", str(local), *deploy], stdin_is_tty=False) is not None
    assert deploy_plan(["--config", str(cluster), *deploy], stdin_is_tty=False) is None


def test_version_is_answered_quickly() -> None:
    from ds01 import __version__

    assert answer(["--version"]) == (f"ds01 {__version__}\n", "")
    r = subprocess.run([str(BIN / "ds01"), "--version"], capture_output=True, text=True)
    assert r.stdout == f"ds01 {__version__}\n"


# ---- the reader itself, against a real Unix-socket server that answers what it is told -------


class Canned:
    """A Unix-socket server answering every connection with `reply`, recording what it got."""

    def __init__(self, reply: bytes) -> None:
        self.dir = short_tmp()
        self.path = str(self.dir / "api.sock")
        self.reply = reply
        self.got: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self.got.append(conn.recv(65536))
                conn.sendall(self.reply)

    def close(self) -> None:
        self.server.close()


def reply(status: str, body: bytes, *headers: str) -> bytes:
    head = "\r\n".join([f"HTTP/1.1 {status}", *headers])
    return head.encode() + b"\r\n\r\n" + body


BODY = b'{"a": [1, 2]}'


@pytest.mark.parametrize(
    ("canned", "expected"),
    [
        (reply("200 OK", BODY, f"Content-Length: {len(BODY)}"), {"a": [1, 2]}),
        (reply("200 OK", BODY, "content-length:  13 "), {"a": [1, 2]}),
        (reply("404 Not Found", BODY, f"Content-Length: {len(BODY)}"), None),
        (reply("200 OK", b"d\r\n" + BODY + b"\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), None),
        (reply("200 OK", BODY[:5], f"Content-Length: {len(BODY)}"), None),  # cut short
        (reply("200 OK", BODY), None),  # no length
        (reply("200 OK", b"not json", "Content-Length: 8"), None),
        (reply("200 OK", BODY, "Content-Length: x"), None),
        (b"garbage", None),
        (b"", None),
    ],
    ids=[
        "plain",
        "header case and spaces",
        "error status",
        "chunked",
        "cut short",
        "no length",
        "not json",
        "bad length",
        "not http",
        "closed at once",
    ],
)
def test_the_reader_takes_only_the_plainest_answer(canned: bytes, expected: Any) -> None:
    server = Canned(canned)
    try:
        assert get_json(server.path, "/v1/quota", {"limit": "5"}) == expected
        assert server.got[0].startswith(b"GET /v1/quota?limit=5 HTTP/1.1\r\n")
    finally:
        server.close()


def test_the_reader_sends_nothing_it_would_have_to_encode() -> None:
    server = Canned(reply("200 OK", BODY, f"Content-Length: {len(BODY)}"))
    try:
        for odd in ("a b", "a&b=c", "é", "", "x\r\nHost: evil"):
            assert get_json(server.path, "/v1/events", {"user": odd}) is None
        assert server.got == []
    finally:
        server.close()


def test_the_reader_without_a_server_is_none(tmp_path: Path) -> None:
    assert get_json(str(tmp_path / "nothing.sock"), "/v1/quota") is None


# ---- deploy ---------------------------------------------------------------------------------


def test_deploy_prints_the_same_both_ways(env: tuple[Daemon, str]) -> None:
    """Progress lines, the result, the hint; and a refusal, with its exit status. Each way
    deploys its own container (the names differ, nothing else does)."""
    d, user = env
    outs = []
    for quick, name in ((True, "qd-quick"), (False, "qd-long")):
        args = ("container", "deploy", name, "--image", TEST_IMAGE, "--cpu-only", "-d")
        code, out, err = run(d, (*args, "--", "sleep", "600"), quick=quick, user=user)
        assert code == 0, err
        outs.append((out.replace(name, "NAME"), err))
        again = run(d, args, quick=quick, user=user)  # the name is taken now
        assert again[0] == 1 and f"you already have a container named '{name}'" in again[2]
        outs.append((again[0], again[1], again[2].replace(name, "NAME")))
        assert run(d, ("container", "retire", name), quick=quick, user=user)[0] == 0
    assert outs[0] == outs[2] and outs[1] == outs[3]
    out, err = outs[0]
    assert out.startswith("✓ NAME is running: none (CPU only)\n")
    assert out.endswith("Open a shell with: ds01 container shell NAME\n")
    assert err.splitlines()[-1] == "… starting the container"


def test_deploy_json_is_the_same_both_ways(env: tuple[Daemon, str]) -> None:
    d, user = env
    got = []
    for quick, name in ((True, "qj-quick"), (False, "qj-long")):
        args = ("container", "deploy", name, "-i", TEST_IMAGE, "--mig", "1g.10gb", "-d", "--json")
        code, out, err = run(d, args, quick=quick, user=user)
        assert (code, err) == (0, "")
        got.append(json.loads(out))
        assert run(d, ("container", "retire", name), quick=quick, user=user)[0] == 0
    assert got[0].keys() == got[1].keys()
    assert (
        [u["profile"] for u in got[0]["gpus"]]
        == ["1g.10gb"]
        == [u["profile"] for u in got[1]["gpus"]]
    )


@pytest.mark.parametrize(
    "options",
    [
        ("--gpus", "1", "--mig", "1g.10gb"),  # two GPU options: ds01d refuses to read it
        ("--gpus", "0"),  # the long way's own checks
        ("--env", "NOVALUE"),
        ("--workspace", "/nonexistent/ds01-quick"),  # refused by ds01d, after reading it
    ],
    ids=" ".join,
)
def test_a_refused_deploy_says_the_same_both_ways(
    env: tuple[Daemon, str], options: tuple[str, ...]
) -> None:
    d, user = env
    args = ("container", "deploy", "qr", "--image", TEST_IMAGE, "-d", *options)
    quick, long_way = run(d, args, quick=True, user=user), run(d, args, quick=False, user=user)
    assert quick == long_way
    assert quick[0] in (1, 2) and quick[1] == "" and "error: " in quick[2].lower(), quick


def test_the_deploy_request_is_the_long_ways(tmp_path: Path) -> None:
    """The body the quick path sends is DeployIn as the long way builds and dumps it."""
    from ds01.api.schemas import DeployIn
    from ds01.cli.quick import deploy_plan

    argv = [
        "--run-dir", str(tmp_path), "container", "deploy", "exp-2", "-i", "img:1", "--mig",
        "1g.10gb, 3g.40gb", "--workspace", "/home/u/w", "--data", "/d/a", "--data", "/d/b",
        "-e", "A=1", "--env", "B=x=y", "--detach", "--", "python", "-m", "train",
    ]  # fmt: skip
    plan = deploy_plan(argv, stdin_is_tty=True)
    assert plan is not None and plan.socket == str(tmp_path / "api.sock") and not plan.as_json
    expected = DeployIn(
        name="exp-2",
        image="img:1",
        mig=["1g.10gb", "3g.40gb"],
        workspace="/home/u/w",
        data=["/d/a", "/d/b"],
        env={"A": "1", "B": "x=y"},
        command=["python", "-m", "train"],
        interactive=False,
    ).model_dump(exclude_none=True)
    assert plan.body == expected
    shell = deploy_plan(["container", "deploy", "s", "--image", "img", "--gpus", "2"], False)
    assert shell is not None and shell.body == DeployIn(
        name="s", image="img", gpus=2, interactive=True
    ).model_dump(exclude_none=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["container", "deploy", "x", "--image", "img"],  # a shell would open: the long way
        ["container", "deploy", "x", "--image=img", "-d"],
        ["container", "deploy", "x", "--image", "img", "-d", "sleep", "1"],  # command without --
        ["container", "deploy", "x", "--image", "img", "--image", "other", "-d"],
        ["container", "deploy", "x", "--image", "img", "-d", "-d"],
        ["container", "deploy", "x", "--image", "img", "-d", "--gpus", "65"],
        ["container", "deploy", "x", "--image", "img", "-d", "--gpus", "-1"],
        ["container", "deploy", "x", "--image", "img", "-d", "--workspace", " "],
        ["container", "deploy", "x", "--image", "img", "-d", "--mig", ","],
        ["container", "deploy", "x", "--image", "img", "-d", "--help"],
        ["container", "deploy", "--image", "img", "-d"],  # no name
        ["container", "deploy", "x" * 64, "--image", "img", "-d"],
        ["--run-dir", "", "container", "deploy", "x", "--image", "img", "-d"],
    ],
    ids=lambda a: " ".join(a)[:60],
)
def test_deploys_the_quick_path_leaves_to_the_long_way(argv: list[str]) -> None:
    from ds01.cli.quick import deploy_plan

    assert deploy_plan(argv, stdin_is_tty=True) is None


def test_the_stream_reader_follows_chunks_and_notices_a_cut() -> None:
    from ds01.unixhttp import post

    lines = b'{"progress": "a"}\n{"progress": "b"}\n{"container": {}}\n'
    chunked = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (lines[:7], lines[7:]))
    server = Canned(reply("200 OK", chunked + b"0\r\n\r\n", "Transfer-Encoding: chunked"))
    try:
        answer = post(server.path, "/v1/containers", {"name": "x"})
        assert answer is not None and answer.status == 200
        assert list(answer.lines()) == lines.splitlines()
        answer.close()
        assert server.got[0].startswith(b"POST /v1/containers HTTP/1.1\r\n")
        assert server.got[0].endswith(b'\r\n\r\n{"name": "x"}')
    finally:
        server.close()
    cut = Canned(reply("200 OK", chunked[:20], "Transfer-Encoding: chunked"))
    try:
        answer = post(cut.path, "/v1/containers", {})
        assert answer is not None
        with pytest.raises(ValueError):
            list(answer.lines())
        answer.close()
    finally:
        cut.close()
    assert post(str(short_tmp() / "none.sock"), "/v1/containers", {}) is None
