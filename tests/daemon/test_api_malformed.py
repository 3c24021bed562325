"""No input from a local user makes ds01d answer 500 or log a traceback (issue 10, D11).

Malformed HTTP (garbage request lines, bad headers, huge or too many headers, bad chunked
encoding, bad lengths), bad JSON, wrong types, NUL bytes in any text and oversized bodies are
sent to a real ds01d over api.sock, byte for byte. Each gets a 4xx; the log gains at most one
line per request and never an ERROR or a traceback. A deploy refused before its stream starts
(an oversized body) shows the refusal through the real CLI, as a real user.
"""

from __future__ import annotations

import contextlib
import json
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loadgen import NOWHERE

from support import BASIC_CONFIG, BIN, MACHINES, Daemon, Users, short_tmp

CONFIG = BASIC_CONFIG + f"docker:\n  host: {NOWHERE}\n"
NUL = "\x00"


def request(method: str, path: str, body: Any = None, headers: str = "") -> bytes:
    raw = b"" if body is None else json.dumps(body).encode()
    return (
        f"{method} {path} HTTP/1.1\r\nHost: ds01d\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n{headers}\r\n"
    ).encode() + raw


MALFORMED: list[tuple[str, bytes]] = [
    ("garbage-request-line", b"GARBAGE\r\n\r\n"),
    ("binary-request-line", b"\x00\x01\x02\xff / HTTP/1.1\r\n\r\n"),
    ("http-version-9.9", b"GET /v1/health HTTP/9.9\r\nHost: x\r\n\r\n"),
    ("header-without-colon", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"),
    ("header-100k", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"),
    (
        "500-headers",
        b"GET /v1/health HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(500)) + b"\r\n",
    ),
    ("url-100k", b"GET /v1/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    (
        "chunk-size-not-hex",
        b"POST /v1/allocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ZZ\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunk-longer-than-said",
        b"POST /v1/allocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nabcdef\r\n0\r\n\r\n",
    ),
    (
        "content-length-negative",
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ),
    (
        "content-length-twice",
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ),
    (
        "transfer-encoding-unknown",
        b"POST /v1/allocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    ),
    ("json-broken", b"POST /v1/allocations HTTP/1.1\r\nContent-Length: 7\r\n\r\n{gpus:1"),
    ("json-array", request("POST", "/v1/allocations", [1, 2])),
    ("json-string", request("POST", "/v1/allocations", "gpus")),
    ("gpus-as-text", request("POST", "/v1/allocations", {"gpus": "two"})),
    ("gpus-1e400", b'POST /v1/allocations HTTP/1.1\r\nContent-Length: 14\r\n\r\n{"gpus":1e400}'),
    ("gpueq-exponent", request("POST", "/v1/allocations", {"gpueq": "1e30000000"})),
    ("mig-not-a-list", request("POST", "/v1/allocations", {"mig": "1g.10gb"})),
    ("unknown-field", request("POST", "/v1/allocations", {"gpus": 1, "user": "root"})),
    ("body-100k", request("POST", "/v1/allocations", {"container": "x" * 100_000})),
    ("id-beyond-64-bits", request("GET", "/v1/allocations/" + "9" * 30)),
    ("id-with-nul", request("GET", "/v1/allocations/1%00")),
    ("events-limit-text", request("GET", "/v1/events?limit=many")),
    ("events-since-text", request("GET", "/v1/events?since=yesterday")),
    ("logs-tail-text", request("GET", "/v1/containers/work/logs?tail=all")),
    ("shell-rows-text", request("GET", "/v1/containers/work/shell?rows=tall")),
    ("no-such-endpoint", request("DELETE", "/v1/everything")),
    ("nul-in-container", request("POST", "/v1/allocations", {"gpus": 1, "container": f"a{NUL}"})),
    ("nul-in-release-reason", request("POST", "/v1/allocations/1/release", {"reason": NUL})),
    ("nul-in-drain-target", request("POST", "/v1/admin/drain", {"target": NUL, "reason": "r"})),
    (
        "nul-in-grant-user",
        request("POST", "/v1/admin/grants", {"user": f"x{NUL}", "reason": "r", "duration": "1h"}),
    ),
    ("nul-in-revoke-user", request("POST", "/v1/admin/grants/revoke", {"user": NUL})),
]
DEPLOY = {"name": "work", "image": "busybox"}
MALFORMED += [
    (f"deploy-nul-in-{key}", request("POST", "/v1/containers", {**DEPLOY, key: value}))
    for key, value in [
        ("workspace", f"/tmp/x{NUL}"),
        ("image", f"busybox{NUL}"),
        ("name", f"a{NUL}"),
        ("data", [f"/tmp{NUL}"]),
        ("env", {f"A{NUL}": "b"}),
        ("env", {"A": f"b{NUL}"}),
        ("command", ["sh", f"-c{NUL}"]),
        ("mig", [f"1g.10gb{NUL}"]),
        ("gpueq", f"0.5{NUL}"),
    ]
]
MALFORMED += [
    ("deploy-gpueq-exponent", request("POST", "/v1/containers", {**DEPLOY, "gpueq": "1e99999"})),
    ("deploy-env-not-text", request("POST", "/v1/containers", {**DEPLOY, "env": {"A": 1}})),
    ("deploy-no-image", request("POST", "/v1/containers", {"name": "work"})),
]


def exchange(path: Path, raw: bytes) -> bytes:
    """Send raw bytes, then read the whole answer (ds01d closes after an error, or we stop at
    the end of one response)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        with contextlib.suppress(BrokenPipeError):  # answered and closed before all was read
            s.sendall(raw)
        answer = b""
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
            head, sep, body = answer.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
        return answer


def status_of(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), answer[:200]
    return int(line.split()[1])


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(short_tmp(), CONFIG, MACHINES / "8xH100-mig-mixed.yaml", None)
    d.start()
    yield d
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


def test_every_malformed_request_gets_a_4xx_and_at_most_one_log_line(daemon: Daemon) -> None:
    before = len(daemon.log().splitlines())
    statuses = {}
    for name, raw in MALFORMED:
        statuses[name] = status_of(exchange(daemon.socket, raw))
    assert {n: s for n, s in statuses.items() if not 400 <= s < 500} == {}
    with daemon.client() as c:
        assert c.health().status == "ok"  # and it still serves
    added = daemon.log().splitlines()[before:]
    assert [line for line in added if " ERROR " in line or "Traceback" in line] == []
    assert len(added) <= len(MALFORMED), "\n".join(added)


def test_a_flood_of_malformed_requests_is_logged_at_a_bounded_rate(daemon: Daemon) -> None:
    before = len(daemon.log().splitlines())
    for _ in range(200):
        assert status_of(exchange(daemon.socket, b"GET /v1/health HTTP/1.1\r\nBad\r\n\r\n")) == 400
    added = daemon.log().splitlines()[before:]
    # At most a burst per minute, then a count (the earlier test may have used the burst up).
    assert len(added) <= 20, "\n".join(added)
    assert "Traceback" not in "\n".join(added)


def test_answers_that_reach_a_handler_are_json_errors(daemon: Daemon) -> None:
    big = exchange(daemon.socket, request("POST", "/v1/allocations", {"container": "x" * 70_000}))
    assert status_of(big) == 413
    error = json.loads(big.partition(b"\r\n\r\n")[2])["error"]
    assert error["what"] == "the request body is too large (the limit is 65536 bytes)"
    nul = exchange(daemon.socket, request("POST", "/v1/containers", {**DEPLOY, "workspace": NUL}))
    assert status_of(nul) == 400
    error = json.loads(nul.partition(b"\r\n\r\n")[2])["error"]
    assert error["what"].endswith("workspace: NUL characters are not allowed")


def test_a_deploy_refused_before_its_stream_shows_the_refusal(daemon: Daemon, users: Users) -> None:
    """The CLI's streamed deploy: a body over the limit is refused (413) while the request is
    still being sent; the user sees the refusal, not a broken stream or a traceback."""
    user = users.add()
    r = daemon.cli(
        "container",
        "deploy",
        "work",
        "--image",
        "busybox",
        "--detach",
        "--env",
        "A=" + "x" * 70_000,
        user=user,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines()[0] == (
        "error: the request body is too large (the limit is 65536 bytes)"
    ), r.stderr
    assert "Traceback" not in r.stderr and "chunked" not in r.stderr


def test_a_deploy_stream_cut_midway_is_told_in_words(daemon_factory: Any, users: Users) -> None:
    """ds01d dies (kill -9) while a deploy streams its progress (Docker frozen: it accepts and
    never answers): the CLI says the deploy ended without a result, not `incomplete chunked
    read` or a traceback."""
    frozen_path = short_tmp() / "docker.sock"
    d: Daemon = daemon_factory(config=BASIC_CONFIG + f"docker:\n  host: unix://{frozen_path}\n")
    frozen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    frozen.bind(str(frozen_path))
    frozen.listen(64)  # connections complete in the backlog; nothing ever answers
    user = users.add()
    pw = pwd.getpwnam(user)
    deploying = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--init-groups",
            str(BIN / "ds01"),
            "container",
            "deploy",
            "work",
            "--image",
            "busybox",
            "--detach",
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir, "LANG": "C.UTF-8", **d.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert deploying.stderr is not None
        first = deploying.stderr.readline()
        assert "checking the Docker engine" in first, first
        d.kill9()
        out, err = deploying.communicate(timeout=60)
    finally:
        if deploying.poll() is None:
            deploying.kill()
        frozen.close()
        shutil.rmtree(frozen_path.parent, ignore_errors=True)
    shown = out + first + err
    assert deploying.returncode != 0, shown
    assert "error: ds01d ended the deploy before it said how it went" in err, shown
    for raw in ("incomplete chunked read", "RemoteProtocolError", "Traceback", "httpx"):
        assert raw not in shown
