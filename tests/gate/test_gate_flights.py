"""Shared container-list flights (gate/flights.py, policy/filters.ContainerList), list heads
read once (server.KnownHeads) and the per-connection idle timer, written as the attacks a gate
user could try on them: get a list older than their request (so that a container made just
before is missing, or one removed just before is still there), get another user's containers
from a shared answer, spoil a flight for the others by going away, or have their head read with
an admin's allow-list.

The flight rule is tested with a scripted fetch that answers only when the test says so, so
every interleaving below is exact rather than hoped for; test_gate_list_sharing.py runs the
same attacks through a real gate and engine.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from ds01.gate.flights import Flights
from ds01.gate.httpio import open_unix, parse_request_head, parse_response_head
from ds01.gate.policy.endpoints import classify
from ds01.gate.policy.filters import ContainerList, fetch_container_list
from ds01.gate.refusal import LocalReply
from ds01.gate.server import KnownHeads, _Connection
from ds01.gate.settings import GateSettings
from ds01.listener import ConnectionLimits


class ScriptedFetch:
    """fetch(key) records the call and answers "<key>#<n>" (n: the how-manieth call) when the
    test lands it, or fails with `error` when one is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._landing: list[asyncio.Event] = []
        self.error: Exception | None = None

    async def __call__(self, key: str) -> str:
        n = len(self.calls)
        self.calls.append(key)
        landed = asyncio.Event()
        self._landing.append(landed)
        await landed.wait()
        if self.error is not None:
            raise self.error
        return f"{key}#{n}"

    def land(self, n: int) -> None:
        self._landing[n].set()


async def settle() -> None:
    """Let every ready task run until none is (the flights' tasks start on later turns)."""
    for _ in range(10):
        await asyncio.sleep(0)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_a_request_arriving_while_a_flight_is_in_the_air_gets_the_next_flight() -> None:
    """The stale-list attack: the first flight may have been sent before the caller's container
    existed, so a request that arrives once it is in the air must not be answered from it."""

    async def scenario() -> None:
        fetch = ScriptedFetch()
        flights: Flights[str, str] = Flights(fetch)
        first = asyncio.create_task(flights.get("ps"))
        await settle()
        assert fetch.calls == ["ps"]  # the first flight is in the air
        second = asyncio.create_task(flights.get("ps"))
        third = asyncio.create_task(flights.get("ps"))
        await settle()
        assert fetch.calls == ["ps"]  # the next one waits until the first has landed
        fetch.land(0)
        assert await first == "ps#0"
        await settle()
        assert fetch.calls == ["ps", "ps"]  # ... and only then starts, for both latecomers
        assert not second.done()
        fetch.land(1)
        assert (await second, await third) == ("ps#1", "ps#1")
        assert flights.started == 2

    run(scenario)


def test_requests_that_arrive_before_a_flight_starts_share_it() -> None:
    async def scenario() -> None:
        fetch = ScriptedFetch()
        flights: Flights[str, str] = Flights(fetch)
        tasks = [asyncio.create_task(flights.get("ps")) for _ in range(16)]
        await settle()
        fetch.land(0)
        assert {await t for t in tasks} == {"ps#0"}
        assert fetch.calls == ["ps"]

    run(scenario)


def test_different_requests_never_share_a_flight() -> None:
    async def scenario() -> None:
        fetch = ScriptedFetch()
        flights: Flights[str, str] = Flights(fetch)
        ps = asyncio.create_task(flights.get("/containers/json"))
        ps_all = asyncio.create_task(flights.get("/containers/json?all=1"))
        await settle()
        assert sorted(fetch.calls) == ["/containers/json", "/containers/json?all=1"]
        fetch.land(0)
        fetch.land(1)
        ps_n = fetch.calls.index("/containers/json")
        assert await ps == f"/containers/json#{ps_n}"
        assert await ps_all == f"/containers/json?all=1#{1 - ps_n}"

    run(scenario)


def test_a_caller_that_goes_away_does_not_take_the_flight_from_the_others() -> None:
    async def scenario() -> None:
        fetch = ScriptedFetch()
        flights: Flights[str, str] = Flights(fetch)
        quitter = asyncio.create_task(flights.get("ps"))
        stayer = asyncio.create_task(flights.get("ps"))
        await settle()
        quitter.cancel()
        await settle()
        fetch.land(0)
        assert await stayer == "ps#0"
        assert quitter.cancelled()

    run(scenario)


def test_a_failed_flight_fails_its_callers_and_the_next_request_flies_afresh() -> None:
    async def scenario() -> None:
        fetch = ScriptedFetch()
        flights: Flights[str, str] = Flights(fetch)
        fetch.error = LocalReply(502, "ds01: the Docker engine is not reachable")
        callers = [asyncio.create_task(flights.get("ps")) for _ in range(3)]
        await settle()
        fetch.land(0)
        for c in callers:
            with pytest.raises(LocalReply):
                await c
        fetch.error = None
        again = asyncio.create_task(flights.get("ps"))
        await settle()
        fetch.land(1)
        assert await again == "ps#1"

    run(scenario)


# ---- one shared answer, narrowed per caller -----------------------------------------------

ALICE_1 = {"Id": "a1", "Names": ["/a1"], "Labels": {"ds01.owner": "alice"}}
# mallory's container with alice's owner label (a legacy build step of an image carrying
# `LABEL ds01.owner=alice`): the label is forgeable, the record is not.
MALLORY_1 = {"Id": "m1", "Names": ["/m1"], "Labels": {"ds01.owner": "alice"}}
ALICE_2 = {"Id": "a2", "Names": ["/a2"], "Labels": {}}
UNRECORDED = {"Id": "x1", "Names": ["/x1"], "Labels": {"ds01.owner": "alice"}}
ENGINE_LIST = [ALICE_1, MALLORY_1, UNRECORDED, ALICE_2]
OWNERS = {"a1": "alice", "m1": "mallory", "a2": "alice"}


def engine_answer(status: int, body: bytes) -> Any:
    return parse_response_head(
        f"HTTP/1.1 {status} OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nServer: Docker/20.10.24 (linux)\r\n\r\n".encode()
    )


def split(answer: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    return {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}, body


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("alice", [ALICE_1, ALICE_2]),
        ("mallory", [MALLORY_1]),
        ("bob", []),
    ],
    ids=[
        "alice sees her recorded containers, not the one with her forged label",
        "mallory sees hers whatever its labels claim",
        "a user with no containers sees an empty list",
    ],
)
def test_each_caller_gets_only_what_the_records_say_is_theirs(
    caller: str, expected: list[dict[str, Any]]
) -> None:
    body = json.dumps(ENGINE_LIST).encode()
    shared = ContainerList(engine_answer(200, body), body, ENGINE_LIST, OWNERS)
    headers, got = split(shared.for_owner(caller))
    assert got == json.dumps(expected).encode()  # the bytes the unshared gate sent
    assert headers["content-length"] == str(len(got))
    assert headers["api-version"] == "1.41"


def test_one_callers_narrowed_answer_is_never_anothers() -> None:
    """The per-caller memo is keyed by the caller: asking as alice first, then as mallory,
    then as alice again gives each their own."""
    body = json.dumps(ENGINE_LIST).encode()
    shared = ContainerList(engine_answer(200, body), body, ENGINE_LIST, OWNERS)
    first_alice = shared.for_owner("alice")
    mallory = shared.for_owner("mallory")
    assert split(mallory)[1] == json.dumps([MALLORY_1]).encode()
    assert shared.for_owner("alice") == first_alice
    assert b"m1" not in first_alice


def test_an_engine_error_reaches_every_caller_as_the_engine_sent_it() -> None:
    body = b'{"message":"invalid filter \'nope\'"}'
    shared = ContainerList(engine_answer(400, body), body, None, {})
    head, _, got = shared.for_owner("alice").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert got == body


# ---- list heads read once -------------------------------------------------------------------


def _read(raw: bytes, admin: bool) -> tuple[Any, Any]:
    head = parse_request_head(raw)
    return head, classify(head, admin)


LIST_HEAD = b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\n\r\n"


def test_a_list_head_read_for_an_admin_is_not_a_users_reading() -> None:
    known = KnownHeads()
    head, req = _read(LIST_HEAD, True)
    known.learn(LIST_HEAD, head, True, req)
    entry = known.get(LIST_HEAD)
    assert entry is not None
    assert entry[1] == {True: req}  # a non-admin's request is read afresh


def test_kept_list_heads_keep_their_own_query_in_the_flight_they_board() -> None:
    """`docker ps` and `docker ps -a` heads, both kept: each one's flight asks the engine for
    exactly its own query (the target is worked out once per kept head, never shared)."""
    known = KnownHeads()
    plain = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n"
    every = plain.replace(b"/containers/json", b"/containers/json?all=1&filters=%7B%7D")
    targets = []
    for raw in (plain, every, plain, every):
        entry = known.get(raw)
        if entry is None:
            head, req = _read(raw, False)
            known.learn(raw, head, False, req)
        else:
            req = entry[1][False]
        targets.append(req.target)
    assert targets == [
        "/v1.41/containers/json",
        "/v1.41/containers/json?all=1&filters=%7B%7D",
        "/v1.41/containers/json",
        "/v1.41/containers/json?all=1&filters=%7B%7D",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1.41/images/json HTTP/1.1\r\nHost: docker\r\n\r\n",
        b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\n\r\n",
        b"GET /v1.41/containers/json HTTP/1.1\r\nX-Pad: " + b"a" * 4096 + b"\r\n\r\n",
    ],
    ids=["another endpoint", "a list with a body", "a head over the size kept"],
)
def test_only_plain_list_heads_are_kept(raw: bytes) -> None:
    known = KnownHeads()
    head, req = _read(raw, False)
    known.learn(raw, head, False, req)
    assert known.get(raw) is None


# ---- the idle timeout, one timer per connection -------------------------------------------


def test_a_connection_left_idle_is_closed_and_a_busy_one_is_not() -> None:
    """The idle timer is armed once per connection: it closes a connection that waits for a
    request longer than idle_timeout_s — also after requests — and never one mid-request."""

    async def scenario() -> None:
        limits = ConnectionLimits(idle_timeout_s=0.2, head_timeout_s=5.0)
        server = SimpleNamespace(settings=GateSettings(limits=limits), deps=None)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        reader, writer = await open_unix(sock=ours)
        conn = _Connection(server, None, reader, writer)  # type: ignore[arg-type]
        answered: list[bool] = []

        async def slow_request(_head: Any, _raw: bytes, _known: Any) -> bool:
            await asyncio.sleep(0.5)  # longer than the idle limit, but busy, not idle
            answered.append(not conn.cw.is_closing())  # still open when the answer is ready
            return True

        conn._one = slow_request  # type: ignore[method-assign]
        conn.server.known_heads = KnownHeads()
        theirs.setblocking(False)
        served = asyncio.create_task(conn.serve())
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(theirs, LIST_HEAD)
        # The request is served whole, and then the idle connection is closed: serve ends and
        # the client reads the end of the stream.
        await asyncio.wait_for(served, 10)
        assert answered == [True]
        assert await asyncio.wait_for(loop.sock_recv(theirs, 10), 10) == b""
        theirs.close()

    run(scenario)


# ---- reading the engine's answer once per flight ------------------------------------------


class OneAnswerEngine:
    """The engine as a flight sees it: one canned answer to the gate's own request."""

    def __init__(self, status: int, body: bytes) -> None:
        self.answer = (engine_answer(status, body), body)
        self.asked: list[str] = []

    async def exchange(self, method: str, target: str) -> tuple[Any, bytes]:
        self.asked.append(f"{method} {target}")
        return self.answer


class Book:
    def __init__(self, owners: dict[str, str]) -> None:
        self.known = owners
        self.lookups: list[list[str]] = []

    def owners(self, _kind: Any, keys: list[str]) -> dict[str, str]:
        self.lookups.append(keys)
        return {k: self.known[k] for k in keys if k in self.known}


def _deps(status: int, body: bytes, owners: dict[str, str]) -> Any:
    return SimpleNamespace(
        engine=OneAnswerEngine(status, body),
        containers=SimpleNamespace(owners=Book(owners)),
    )


def test_a_flight_reads_the_list_once_and_looks_its_owners_up_once() -> None:
    deps = _deps(200, json.dumps(ENGINE_LIST).encode(), OWNERS)
    shared = asyncio.run(fetch_container_list(deps, "/v1.41/containers/json?all=1"))
    assert deps.engine.asked == ["GET /v1.41/containers/json?all=1"]
    assert deps.containers.owners.lookups == [["a1", "m1", "x1", "a2"]]
    assert split(shared.for_owner("mallory"))[1] == json.dumps([MALLORY_1]).encode()


@pytest.mark.parametrize(
    "body",
    [b'{"Id": "a1"}', b"[{", b'"a1"'],
    ids=["an object", "not JSON", "a string"],
)
def test_a_200_that_is_not_a_list_is_refused_for_everyone(body: bytes) -> None:
    with pytest.raises(LocalReply) as err:
        asyncio.run(fetch_container_list(_deps(200, body, OWNERS), "/containers/json"))
    assert err.value.status == 502


def test_an_empty_list_spelt_null_is_an_empty_list() -> None:
    shared = asyncio.run(fetch_container_list(_deps(200, b"null", {}), "/containers/json"))
    assert split(shared.for_owner("alice"))[1] == b"[]"
