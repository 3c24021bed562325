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
]
LONG_WAY = [
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
            "--", "sleep", "600",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
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
    assert agree(lambda: run(d, args, quick=True), lambda: (0, out, "")) == ((0, out, ""),) * 2


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
    assert run(d, args, quick=True, user=user) == run(d, args, quick=False, user=user)


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
