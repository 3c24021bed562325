"""The typed client's transport (client.py over ds01/unixhttp.py's Pool): kept-alive
connections, every way an answer can end, and threads sharing one client. A real Unix-socket
server plays ds01d with scripted answers; the last test uses a real ds01d.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ds01.api.schemas import AllocateIn
from ds01.client import Client
from ds01.errors import DaemonUnavailable, NotFound
from local_servers import CLOSE, HANG, KEEP, Script, ScriptedUnixServer
from support import Daemon, short_tmp

Serve = Callable[[Script], ScriptedUnixServer]


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "\r\n".join([f"HTTP/1.1 {status}", *headers])
    return head.encode() + b"\r\n\r\n" + body


def json_answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    return answer(body, f"Content-Length: {len(body)}", *headers, status=status)


OK = json_answer(b'{"status": "ok", "version": "x"}')


def test_requests_share_one_kept_alive_connection(
    scripted: Serve,
) -> None:
    server = scripted(lambda n, req: (json_answer(b'{"n": %d}' % n), KEEP))
    with Client(server.path) as c:
        got = [c.container_stats() for _ in range(3)]
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert len(server.connections) == 1
    assert [r.split(b"\r\n", 1)[0] for r in server.connections[0]] == [
        b"GET /v1/container-stats HTTP/1.1"
    ] * 3


def test_a_connection_ds01d_closed_while_idle_is_not_used_again(
    scripted: Serve,
) -> None:
    """ds01d closes idle connections; the next request opens a new one instead of failing."""
    server = scripted(lambda n, req: (json_answer(b'{"n": %d}' % n), CLOSE))
    with Client(server.path) as c:
        first = c.container_stats()
        time.sleep(0.2)  # the server's close has arrived
        second = c.container_stats()
    assert (first, second) == ({"n": 0}, {"n": 1})
    assert len(server.connections) == 2


def test_connection_close_in_the_answer_is_honoured(
    scripted: Serve,
) -> None:
    server = scripted(lambda n, req: (json_answer(b"{}", "Connection: close"), KEEP))
    with Client(server.path) as c:
        c.container_stats()
        c.container_stats()
    assert [len(x) for x in server.connections] == [1, 1]


def test_bodies_queries_chunked_answers_and_errors(
    scripted: Serve,
) -> None:
    chunked = answer(b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n', "Transfer-Encoding: chunked")
    missing = b'{"error": {"kind": "not_found", "what": "no container named \'x\'"}}'
    replies = [
        (chunked, KEEP),
        (json_answer(missing, status="404 Not Found"), KEEP),
        (json_answer(b'{"id": 7}'), KEEP),
    ]
    server = scripted(lambda n, req: replies[n])
    with Client(server.path) as c:
        assert c.container_stats(all_users=True) == {"a": 1}
        with pytest.raises(NotFound) as caught:
            c.container_stats("x")
        assert caught.value.what == "no container named 'x'"
        assert c.openapi() == {"id": 7}
    requests = server.connections[0]
    assert requests[0].startswith(b"GET /v1/container-stats?all=1 HTTP/1.1\r\n")
    assert requests[1].startswith(b"GET /v1/container-stats/x HTTP/1.1\r\n")
    assert len(server.connections) == 1  # an error answer leaves the connection usable


def test_a_post_sends_its_json_body(scripted: Serve) -> None:
    server = scripted(lambda n, req: (json_answer(b'{"name": "c", "state": "x"}'), KEEP))
    with Client(server.path) as c:
        c.container_op("a b", "stop")
        c.drain("0", "fan noisé")
    first, second = server.connections[0]
    assert first.startswith(b"POST /v1/containers/a%20b/stop HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 0\r\n" in first
    assert second.startswith(b"POST /v1/admin/drain HTTP/1.1\r\n")
    assert second.endswith(b'\r\n\r\n{"target":"0","reason":"fan nois\\u00e9"}')
    assert b"\r\nContent-Type: application/json\r\n" in second


@pytest.mark.parametrize(
    ("reply", "then", "timeout", "words"),
    [
        (answer(b'{"a"', "Content-Length: 40"), CLOSE, 5.0, "closed the connection before"),
        (b"", CLOSE, 5.0, "closed the connection before"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", HANG, 0.5, "did not answer in time"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", CLOSE, 5.0, "closed the connection before"),
        (json_answer(b"<html>"), KEEP, 5.0, "answered 200 with a body that is not JSON"),
    ],
    ids=["cut short", "closed at once", "stalled", "not http", "not json"],
)
def test_every_broken_answer_is_daemon_unavailable_in_words(
    scripted: Serve,
    reply: bytes,
    then: str,
    timeout: float,
    words: str,
) -> None:
    server = scripted(lambda n, req: (reply, then))
    with Client(server.path, timeout=timeout) as c, pytest.raises(DaemonUnavailable) as caught:
        c.container_stats()
    assert words in caught.value.what


def test_nothing_listening_is_cannot_reach() -> None:
    path = short_tmp() / "api.sock"
    with Client(path) as c, pytest.raises(DaemonUnavailable) as caught:
        c.health()
    assert caught.value.what == f"cannot reach ds01d at {path}"


def test_notices_in_an_answer_reach_the_callback(
    scripted: Serve,
) -> None:
    from ds01.notices import encode

    notice = {"message": "GPU idle for 50 min", "at": "2026-12-05T10:00:00+00:00"}
    server = scripted(
        lambda n, req: (json_answer(b"{}", f"X-Ds01-Notices: {encode([notice])}"), KEEP)
    )
    seen: list[list[dict[str, Any]]] = []
    with Client(server.path, notices=seen.append) as c:
        c.container_stats()
    assert seen == [[notice]]
    assert b"\r\nX-Ds01-Notices: 1\r\n" in server.connections[0][0]


@pytest.mark.root
def test_threads_sharing_one_client_against_a_real_ds01d(daemon_factory: Any) -> None:
    """Eight threads allocate and release through one client at once: each request has a
    connection to itself, every answer is the asker's own, and nothing is left allocated."""
    d: Daemon = daemon_factory(
        config="defaults: {max_gpueq: 100, max_units_per_container: 8, max_containers: 100}\n"
    )
    errors: list[BaseException] = []
    with Client(d.socket) as c:

        def work(t: int) -> None:
            try:
                for i in range(15):
                    a = c.allocate(AllocateIn(mig=["1g.10gb"], container=f"t{t}-{i}"))
                    assert a.container == f"t{t}-{i}"
                    released = c.release(a.id, reason="done")
                    assert (released.id, released.state) == (a.id, "released")
            except BaseException as e:  # reported below, with the thread's name
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert c.allocations() == []
