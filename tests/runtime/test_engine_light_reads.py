"""The two reads ds01d makes of the engine for each container event without the Docker SDK:
the event stream itself (runtime/eventstream.py behind Engine.events) and Engine.running (one
GET on a kept-alive connection). A Unix-socket server with scripted answers plays the engine
for every way an answer can come or break; the real private engine checks the same calls.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable

import pytest

from ds01.errors import RuntimeUnavailable
from ds01.runtime import ContainerSpec, Engine, EngineError
from local_servers import CLOSE, HANG, Script, ScriptedUnixServer
from support import short_tmp

Serve = Callable[[Script], ScriptedUnixServer]


def engine_on(scripted: Serve, pieces: list[bytes], then: str = CLOSE) -> ScriptedUnixServer:
    """A scripted engine answering every request with `pieces`, written apart."""
    return scripted(lambda n, req: (pieces, then))


def first_line(server: ScriptedUnixServer) -> str:
    return server.connections[0][0].split(b"\r\n", 1)[0].decode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)
DIE = {"Type": "container", "Action": "die", "id": "a" * 64}
DESTROY = {"Type": "container", "Action": "destroy", "id": "b" * 64}


def test_events_come_whole_however_the_engine_cuts_its_chunks(scripted: Serve) -> None:
    both = json.dumps(DIE).encode() + b"\n" + json.dumps(DESTROY).encode() + b"\n"
    cut = len(json.dumps(DIE)) + 10  # the second event starts in one chunk, ends in the next
    server = engine_on(
        scripted, [CHUNKED_HEAD, chunk(both[:cut]), chunk(both[cut:]), chunk(b"\n"), b"0\r\n\r\n"]
    )
    engine = Engine(f"unix://{server.path}")
    with engine.events(since=100, until=200, filters={"event": ["die", "destroy"]}) as stream:
        events = list(stream)
    assert events == [DIE, DESTROY]
    method, target, _ = first_line(server).split(" ")
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query)
    assert (method, path, params["since"], params["until"]) == ("GET", "/events", ["100"], ["200"])
    assert json.loads(params["filters"][0]) == {
        "event": ["die", "destroy"],
        "type": ["container"],
        "label": ["ds01.managed=true"],
    }


def test_a_stream_without_chunks_ends_when_the_engine_closes_it(
    scripted: Serve,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
    server = engine_on(scripted, [head, json.dumps(DIE).encode() + b"\n"])
    with Engine(f"unix://{server.path}").events() as stream:
        assert list(stream) == [DIE]


def test_an_engine_refusal_is_an_engine_error_in_its_own_words(scripted: Serve) -> None:
    body = b'{"message":"invalid filter \'event=bogus\'"}'
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = engine_on(scripted, [answer])
    with pytest.raises(EngineError) as err:
        Engine(f"unix://{server.path}").events(filters={"event": ["bogus"]})
    assert err.value.what == "cannot subscribe to Docker events: the Docker engine refused"
    assert err.value.why == "invalid filter 'event=bogus'"


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([CHUNKED_HEAD, b"zz\r\n"], id="a chunk size that is not hex"),
        pytest.param([CHUNKED_HEAD, chunk(b"not json\n")], id="a line that is not JSON"),
        pytest.param([CHUNKED_HEAD, chunk(b"[1, 2]\n")], id="JSON that is not an event"),
    ],
)
def test_a_garbled_stream_is_reported_as_a_cut_connection(
    scripted: Serve, pieces: list[bytes]
) -> None:
    server = engine_on(scripted, pieces, HANG)
    with (
        Engine(f"unix://{server.path}").events() as stream,
        pytest.raises(RuntimeUnavailable) as err,
    ):
        next(stream)
    assert err.value.what == "cannot read Docker events: the Docker engine is not reachable"


def test_an_answer_that_is_not_http_is_reported_at_once(scripted: Serve) -> None:
    server = engine_on(scripted, [b"SSH-2.0-OpenSSH_9.2\r\n"])
    with pytest.raises(RuntimeUnavailable) as err:
        Engine(f"unix://{server.path}").events()
    assert err.value.what == "cannot subscribe to Docker events: the Docker engine is not reachable"


def test_a_waiting_stream_ends_when_closed_from_another_thread(
    scripted: Serve,
) -> None:
    server = engine_on(scripted, [CHUNKED_HEAD, chunk(json.dumps(DIE).encode() + b"\n")], HANG)
    stream = Engine(f"unix://{server.path}").events()
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    reader.join(timeout=30)
    assert (reader.is_alive(), received) == (False, [DIE])


def test_no_engine_to_subscribe_to_says_docker_is_not_running() -> None:
    path = short_tmp() / "docker.sock"
    with pytest.raises(RuntimeUnavailable) as err:
        Engine(f"unix://{path}").events()
    assert err.value.why == f"Docker is not running: its socket {path} does not exist."


def test_running_reports_an_engine_refusal_and_a_cut_answer(scripted: Serve) -> None:
    body = b'{"message":"the engine is shutting down"}'
    refusing = engine_on(
        scripted, [b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]
    )
    with pytest.raises(EngineError) as err:
        Engine(f"unix://{refusing.path}").running("c1")
    assert err.value.why == "the engine is shutting down"
    cut = engine_on(scripted, [b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"Id"'])
    with pytest.raises(RuntimeUnavailable):
        Engine(f"unix://{cut.path}").running("c1")
    assert first_line(cut) == "GET /containers/c1/json HTTP/1.1"


@pytest.mark.docker
def test_running_follows_a_container_from_start_to_removal(
    engine: Engine, make_spec: Callable[..., ContainerSpec], short_name: str
) -> None:
    spec = make_spec(name=short_name, command=("sleep", "300"))
    cid = engine.create(spec)
    try:
        seen = [engine.running(cid)]
        engine.start(cid)
        seen.append(engine.running(spec.docker_name))
        engine.stop(cid, timeout_s=0)
        seen.append(engine.running(cid))
    finally:
        engine.remove(cid, force=True)
    seen.append(engine.running(cid))
    assert seen == [False, True, False, False]
