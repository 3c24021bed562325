"""The gate's pure parts, without Docker: HTTP head parsing and framing, target normalisation and
the allow-list, strict JSON reading, limits, filters — each as a table of named cases with
literal expectations — and the refusal table kept in step with docs/gate.md."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ds01.config import parse_config_text
from ds01.gate.httpio import HttpError, Reader, parse_request_head, read_chunked
from ds01.gate.policy import filters
from ds01.gate.policy.endpoints import classify, encode_target, split_target
from ds01.gate.policy.jsonbody import canonical, parse_object
from ds01.gate.policy.limits import check_caps
from ds01.gate.refusal import RULES, GateRefusal
from ds01.identity import Caller
from ds01.model.gpueq import GpuEq
from ds01.model.limits import Limits
from ds01.runtime.stamp import fill_limits
from ds01.scheduler.snapshot import Request, RequestKind

ROOT = Path(__file__).resolve().parents[2]


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode() + b"\r\n"


# ---- request heads ------------------------------------------------------------------------

BAD_HEADS = [
    (
        "both Content-Length and Transfer-Encoding",
        "POST /x HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n",
        400,
    ),
    ("Content-Length twice", "POST /x HTTP/1.1\nContent-Length: 3\nContent-Length: 3\n", 400),
    ("a transfer coding other than chunked", "POST /x HTTP/1.1\nTransfer-Encoding: gzip\n", 501),
    ("chunked, then gzip", "POST /x HTTP/1.1\nTransfer-Encoding: chunked, gzip\n", 501),
    ("a signed Content-Length", "POST /x HTTP/1.1\nContent-Length: +3\n", 400),
    ("an obs-fold continuation line", "GET /x HTTP/1.1\nX-A: 1\n  folded\n", 400),
    ("a space before the colon", "GET /x HTTP/1.1\nHost : x\n", 400),
    ("a NUL in a header value", "GET /x HTTP/1.1\nX-A: a\x00b\n", 400),
    ("a bare LF inside a line", "GET /x HTTP/1.1\nX-A: a\rb\n", 400),
    ("an absolute-form target", "GET http://docker/x HTTP/1.1\n", 400),
    ("HTTP/2 in the request line", "GET /x HTTP/2.0\n", 400),
    ("a lower-case method", "get /x HTTP/1.1\n", 400),
    ("Host twice", "GET /x HTTP/1.1\nHost: a\nHost: b\n", 400),
    ("chunked in HTTP/1.0", "POST /x HTTP/1.0\nTransfer-Encoding: chunked\n", 400),
]


@pytest.mark.parametrize(("text", "status"), [pytest.param(t, s, id=n) for n, t, s in BAD_HEADS])
def test_ambiguous_heads_are_refused(text: str, status: int) -> None:
    with pytest.raises(HttpError) as err:
        parse_request_head(head(text))
    assert err.value.status == status


def test_a_plain_head_is_read() -> None:
    h = parse_request_head(
        head(
            "POST /v1.41/build?t=x HTTP/1.1\nHost: docker\n"
            "Transfer-Encoding: Chunked\nConnection: Upgrade\nUpgrade: tcp\n"
        )
    )
    assert (h.method, h.target, h.minor, h.chunked, h.content_length) == (
        "POST",
        "/v1.41/build?t=x",
        1,
        True,
        None,
    )
    assert h.upgrade == "tcp"
    assert h.keep_alive


def test_chunked_body_is_decoded_with_extensions_and_trailers() -> None:
    async def go() -> bytes:
        reader = Reader()  # fed as the event loop would feed it
        reader.data_received(b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
        reader.eof_received()
        return await read_chunked(reader, 100)

    assert asyncio.run(go()) == b"abcde"


def test_chunked_body_over_the_cap_is_413() -> None:
    async def go() -> bytes:
        reader = Reader()
        reader.data_received(b"a\r\n0123456789\r\n0\r\n\r\n")
        reader.eof_received()
        return await read_chunked(reader, 5)

    with pytest.raises(HttpError) as err:
        asyncio.run(go())
    assert err.value.status == 413


# ---- reading a connection (httpio.Reader is the connection's protocol) ----------------------


def test_a_peer_that_sends_more_than_is_read_is_held_back_and_nothing_is_lost() -> None:
    """Reading from the socket pauses while more than the limit waits unread (a client cannot
    make the gate buffer without bound), and every byte arrives, in order, once asked for."""
    sent = bytes(range(256)) * (8 * 4096)  # 8 MiB
    limit = 64 * 1024

    async def go() -> tuple[int, bytes]:
        import socket

        from ds01.gate.httpio import open_unix

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        reader, writer = await open_unix(sock=ours, limit=limit)
        loop = asyncio.get_running_loop()
        sender = loop.run_in_executor(None, theirs.sendall, sent)
        await reader.fill()
        for _ in range(20):  # let the event loop read what it will
            await asyncio.sleep(0.01)
        held = len(reader.buf)
        got = await reader.read_exact(len(sent))
        await sender
        theirs.close()
        writer.close()
        return held, got

    held, got = asyncio.run(go())
    assert held < 1024 * 1024, f"{held} bytes buffered with a limit of {limit}"
    assert got == sent


def test_a_broken_connection_gives_what_came_and_then_its_error() -> None:
    async def go() -> tuple[bytes, BaseException | None]:
        reader = Reader()  # fed as the event loop would feed it
        reader.data_received(b"abc")
        reader.connection_lost(ConnectionResetError("reset by peer"))
        got = await reader.read_exact(3)
        try:
            await reader.fill()
        except ConnectionResetError as exc:
            return got, exc
        return got, None

    got, error = asyncio.run(go())
    assert got == b"abc"
    assert isinstance(error, ConnectionResetError) and str(error) == "reset by peer"


def test_two_readers_of_one_connection_are_refused() -> None:
    async def go() -> str:
        reader = Reader()
        first = asyncio.create_task(reader.fill())
        await asyncio.sleep(0)
        try:
            await reader.fill()
        except RuntimeError as exc:
            return str(exc)
        finally:
            reader.data_received(b"x")
            assert await first is True
        return "no error"

    assert asyncio.run(go()) == "two coroutines read one connection at once"


def test_header_lookups_take_the_first_value_and_refuse_repeated_framing() -> None:
    h = parse_request_head(head("GET /x HTTP/1.1\nX-A: 1\nx-a: 2\nHost: d\n"))
    assert h.headers.get("X-A") == "1"
    assert h.headers.items == [("X-A", "1"), ("x-a", "2"), ("Host", "d")]
    with pytest.raises(HttpError, match="header host sent twice"):
        parse_request_head(head("GET /x HTTP/1.1\nHost: d\nhost: e\n"))


# ---- targets and the allow-list -----------------------------------------------------------

TARGETS = [
    ("a version prefix", "/v1.41/containers/json?all=1", "/v1.41/containers/json", [("all", "1")]),
    ("percent-encoded letters", "/v1.41/containers/%63reate", "/v1.41/containers/create", []),
    (
        "plus in the query is a space",
        "/images/json?filters=a+b",
        "/images/json",
        [("filters", "a b")],
    ),
    (
        "an encoded slash in a name stays one segment's text",
        "/images/a%2Fb/json",
        "/images/a/b/json",
        [],
    ),
]


@pytest.mark.parametrize(
    ("target", "path", "query"), [pytest.param(t, p, q, id=n) for n, t, p, q in TARGETS]
)
def test_targets_are_decoded_like_go(target: str, path: str, query: list[Any]) -> None:
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(
    "target",
    [
        "/containers/json?a=1;b=2",
        "/containers/%zz/json",
        "/containers//json",
        "/containers/../info",
        "/containers/./json",
        "/containers/json#frag",
        "/a%00b",
        "/containers/%ff/json",
    ],
)
def test_unclean_targets_are_refused(target: str) -> None:
    with pytest.raises(HttpError):
        split_target(target)


ROUTES = [
    ("ping", "GET", "/_ping", "ping"),
    ("versioned list", "GET", "/v1.41/containers/json", "containers.list"),
    ("a container by name", "POST", "/v1.40/containers/web-1/start", "container.start"),
    (
        "an image name with a slash and tag",
        "DELETE",
        "/images/ds01-test/busybox:latest",
        "image.remove",
    ),
    ("exec start", "POST", "/exec/abc/start", "exec.start"),
    ("BuildKit session", "POST", "/session", "build.session"),
    ("docker system df, for the caller's share", "GET", "/v1.41/system/df", "system.df"),
]


@pytest.mark.parametrize(
    ("method", "target", "name"), [pytest.param(m, t, n, id=i) for i, m, t, n in ROUTES]
)
def test_allowed_routes(method: str, target: str, name: str) -> None:
    req = classify(parse_request_head(head(f"{method} {target} HTTP/1.1\n")), is_admin=False)
    assert req.name == name


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("GET /swarm", "endpoint.admin_only"),
        ("POST /v1.41/plugins/pull", "endpoint.admin_only"),
        ("GET /v1.41/distribution/x/json", "endpoint.admin_only"),
        ("POST /system/df", "endpoint.admin_only"),
        ("GET /system/df/x", "endpoint.admin_only"),
        ("POST /build/prune", "endpoint.admin_only"),
        ("GET /containers/a/b/json", "endpoint.unknown"),
        ("PATCH /containers/a/json", "endpoint.unknown"),
        ("GET /v1.41/nonexistent", "endpoint.unknown"),
    ],
)
def test_refused_routes(target: str, rule: str) -> None:
    method, path = target.split()
    with pytest.raises(GateRefusal) as err:
        classify(parse_request_head(head(f"{method} {path} HTTP/1.1\n")), is_admin=False)
    assert err.value.rule == rule


def test_admins_reach_the_admin_families_but_not_unknown_ones() -> None:
    req = classify(parse_request_head(head("GET /v1.41/swarm HTTP/1.1\n")), is_admin=True)
    assert req.name == "admin.passthrough"
    with pytest.raises(GateRefusal):
        classify(parse_request_head(head("GET /nonexistent HTTP/1.1\n")), is_admin=True)


def test_targets_are_re_encoded_canonically() -> None:
    assert encode_target(
        "/v1.41", "/images/ds01-test/busybox:latest/json", [("filters", '{"a":1}')]
    ) == ("/v1.41/images/ds01-test/busybox:latest/json?filters=%7B%22a%22%3A1%7D")


# ---- JSON the way Go reads it -------------------------------------------------------------


def test_keys_are_matched_with_gos_case_folding() -> None:
    data = parse_object(
        '{"hostconfig": {"Bind\u017f": ["/x:/y"], "\u212aernelMemory": 1}}'.encode(), "create"
    )
    top = canonical(data, ("HostConfig",), "")
    hc = canonical(top["HostConfig"], ("Binds", "KernelMemory"), "HostConfig.")
    assert hc == {"Binds": ["/x:/y"], "KernelMemory": 1}


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"", "body.empty"),
        (b"   ", "body.empty"),
        (b"[]", "body.unparsable"),
        (b'{"a": NaN}', "body.unparsable"),
        (b'{"a": 1e999}', "body.unparsable"),
        (b'{"a": 1} trailing', "body.unparsable"),
        (b'{"Image": "x", "image": "y"}', "body.unparsable"),
        (b'{"Image": "\xff"}', "body.unparsable"),
        (b"\xef\xbb\xbf{}", "body.unparsable"),
    ],
)
def test_bodies_the_gate_cannot_read_exactly_are_refused(body: bytes, rule: str) -> None:
    with pytest.raises(GateRefusal) as err:
        parse_object(body, "container create")
    assert err.value.rule == rule


def test_unknown_fields_pass_only_when_empty() -> None:
    assert canonical({"Known": 1, "Other": None, "More": [], "Zero": 0}, ("Known",), "") == {
        "Known": 1
    }
    with pytest.raises(GateRefusal) as err:
        canonical({"Known": 1, "Other": True}, ("Known",), "HostConfig.")
    assert err.value.rule == "create.unknown_field"
    assert "HostConfig.Other" in err.value.what


# ---- limits and filters -------------------------------------------------------------------

LIMITS = Limits(
    max_gpueq=GpuEq(1),
    max_units_per_container=1,
    max_containers=1,
    allow_full_gpu=True,
    cpus=2.0,
    memory_bytes=1024**3,
    memory_swap_bytes=2 * 1024**3,
    shm_bytes=64 * 1024**2,
    pids=100,
)


def test_defaults_fill_what_the_request_left_unset() -> None:
    hc: dict[str, Any] = {"Memory": 512 * 1024**2}
    check_caps(hc, LIMITS)
    fill_limits(hc, LIMITS)
    assert hc == {
        "Memory": 512 * 1024**2,
        "NanoCpus": 2_000_000_000,
        "MemorySwap": 1536 * 1024**2,
        "ShmSize": 64 * 1024**2,
        "PidsLimit": 100,
    }


@pytest.mark.parametrize(
    ("hc", "what"),
    [
        ({"NanoCpus": 3_000_000_000}, "--cpus 3 is above your limit of 2 CPUs"),
        ({"CpuQuota": 300000, "CpuPeriod": 100000}, "--cpus 3 is above your limit of 2 CPUs"),
        ({"Memory": 2 * 1024**3}, "--memory 2g is above your limit of 1g"),
        ({"MemorySwap": -1}, "--memory-swap unlimited is above your limit of 2g (memory + swap)"),
        ({"ShmSize": 128 * 1024**2}, "--shm-size 128m is above your limit of 64m"),
        ({"PidsLimit": 101}, "--pids-limit 101 is above your limit of 100"),
    ],
)
def test_caps(hc: dict[str, Any], what: str) -> None:
    with pytest.raises(GateRefusal) as err:
        check_caps(hc, LIMITS)
    assert err.value.what == what


def test_owner_filter_is_added_to_the_users_own() -> None:
    class _Caller:
        name = "h.baker@hertie-school.lan"

    class _Ctx:
        caller = _Caller()

    out = filters.with_owner(
        _Ctx(), [("all", "1"), ("filters", '{"label":["a=b"],"status":{"exited":true}}')]
    )  # type: ignore[arg-type]
    assert out[0] == ("all", "1")
    assert json.loads(out[1][1]) == {
        "label": {"a=b": True, "ds01.owner=h.baker@hertie-school.lan": True},
        "status": {"exited": True},
    }


# ---- the refusal table and the docs -------------------------------------------------------


def test_every_rule_is_documented() -> None:
    doc = (ROOT / "docs" / "gate.md").read_text()
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", doc))
    assert set(RULES) - documented == set()
    assert documented & {
        r
        for r in documented
        if r.split(".")[0]
        in {
            "endpoint",
            "create",
            "gpu",
            "container",
            "exec",
            "image",
            "build",
            "volume",
            "network",
            "body",
            "request",
        }
    } <= set(RULES)


def test_refusal_messages_say_what_why_and_instead() -> None:
    for rule in RULES.values():
        assert rule.why.endswith(".") and rule.instead.endswith((".", ")")), rule.id
    ref = GateRefusal("create.privileged", "--privileged was refused")
    assert ref.message.splitlines() == [
        "ds01: --privileged was refused",
        RULES["create.privileged"].why,
        RULES["create.privileged"].instead,
    ]


# ---- --gpus all, mapped to the caller's maximum when the admin says so --------------------


class _Svc:
    """The AllocationService reads services.status.quota makes for gpus.py's `--gpus all` (a
    stub, not a patch)."""

    def __init__(self, limits: Limits, held: list[GpuEq]) -> None:
        self._limits, self._held = limits, held

    class config:  # noqa: N801 - stands in for the property of the same name
        @staticmethod
        def is_exempt(user: str) -> bool:
            return False

    def limits_for(self, caller: object) -> Any:
        class R:
            limits = self._limits

        return R()

    def offers(self, caller: object) -> tuple[tuple[Any, ...], Request]:
        """Nothing on offer; the one request to suggest is a whole GPU."""
        return (), Request(user="alice", kind=RequestKind.GPUS, count=1)

    def live_allocations(self, caller: object, all_users: bool) -> list[Any]:
        class Row:
            def __init__(self, g: GpuEq) -> None:
                self.gpueq = g

        return [Row(g) for g in self._held]


def _ctx(gpus_all: str, limits: Limits, held: list[GpuEq]) -> Any:
    from ds01.gate.settings import GateSettings

    class Deps:
        allocations = _Svc(limits, held)
        settings = GateSettings()

    class Ctx:
        deps = Deps()
        config = parse_config_text(f"gate:\n  gpus_all: {gpus_all}\n", "ds01.yaml")
        caller = Caller(uid=1000, gid=1000, pid=1, name="alice", groups=frozenset())

        async def run(self, fn: Any, *args: Any, **kw: Any) -> Any:
            return fn(*args, **kw)

    return Ctx()


@pytest.mark.parametrize(
    ("max_gpueq", "per_container", "held", "count"),
    [
        ("4", 2, [], 2),
        ("4", 8, ["1"], 3),
        ("3/2", 8, [], 1),
        ("2", 8, ["2"], 1),  # nothing left: 1, so that the scheduler refuses it for quota
    ],
)
def test_gpus_all_maps_to_the_most_whole_gpus_left(
    max_gpueq: str, per_container: int, held: list[str], count: int
) -> None:
    from fractions import Fraction

    from ds01.gate.policy import gpus

    limits = Limits(
        max_gpueq=GpuEq(Fraction(max_gpueq)),
        max_units_per_container=per_container,
        max_containers=9,
        allow_full_gpu=True,
    )
    ctx = _ctx("max", limits, [GpuEq(Fraction(h)) for h in held])
    req, wanted = asyncio.run(gpus._request(ctx, gpus.GpuAsk(-1), "c"))
    assert (req.kind.value, req.count, wanted) == ("gpus", count, ())


def test_gpus_all_is_refused_by_default() -> None:
    from ds01.gate.policy import gpus

    ctx = _ctx("refuse", LIMITS, [])
    with pytest.raises(GateRefusal) as err:
        asyncio.run(gpus._request(ctx, gpus.GpuAsk(-1), None))
    assert err.value.rule == "gpu.all"
    assert "Ask for what your limits allow: --gpus 1" in str(err.value.fix)


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([{"Driver": "", "Count": 2, "Capabilities": [["gpu"]]}], (2, ())),
        ([{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}], (-1, ())),
        ([{"Driver": "nvidia", "DeviceIDs": ["0", "GPU-x"]}], (0, ("0", "GPU-x"))),
        ([{"driver": "", "count": 1, "capabilities": [["gpu", "compute"]]}], (1, ())),
        ([{"Driver": "", "Count": 0, "Capabilities": [["gpu"]]}], None),
        (None, None),
    ],
)
def test_gpu_requests_are_read(requests: Any, expected: Any) -> None:
    from ds01.gate.policy import gpus

    ask = gpus.parse(requests)
    assert (None if ask is None else (ask.count, ask.device_ids)) == expected


@pytest.mark.parametrize(
    ("requests", "rule"),
    [
        ([{"Driver": "amd", "Count": 1}], "create.devices"),
        ([{"Driver": "", "Count": 1, "Capabilities": [["compute"]]}], "create.devices"),
        (
            [{"Driver": "", "Count": 1, "DeviceIDs": ["0"], "Capabilities": [["gpu"]]}],
            "gpu.request",
        ),
        ([{"Driver": "nvidia", "Count": 1}, {"Driver": "nvidia", "Count": 1}], "gpu.request"),
        ([{"Driver": "nvidia", "Count": 1, "Options": {"x": "y"}}], "gpu.request"),
        ([{"Driver": "nvidia", "Count": 1, "Extra": True}], "gpu.request"),
    ],
)
def test_unreadable_gpu_requests_are_refused(requests: Any, rule: str) -> None:
    from ds01.gate.policy import gpus

    with pytest.raises(GateRefusal) as err:
        gpus.parse(requests)
    assert err.value.rule == rule
