"""Which Docker Engine API endpoints exist for the gate: the allow-list, the admin-only families,
and the normalisation that makes the gate and the engine read a request target the same way.

Normalisation (the engine is Go's net/http + gorilla/mux): the path is percent-decoded once,
strictly (a stray '%' is refused), must be clean (no '//', '.', '..' segments: mux would
redirect) and free of control characters; an optional API version prefix '/v1.41' is split off
(the engine accepts any '/v[0-9.]+'); the query is split on '&' only (Go refuses ';') and decoded
like Go's ParseQuery. Names, IDs and ID prefixes in a path are *not* interpreted here: the
ownership rules ask the engine what they refer to and forward the full ID.

Unknown method+path pairs are refused (fail closed). Must not talk to the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from urllib.parse import quote

from ds01.gate.httpio import HttpError, RequestHead
from ds01.gate.refusal import GateRefusal


class Body(Enum):
    NONE = "none"  # the endpoint takes no body: anything but an empty one is refused
    STREAM = "stream"  # forwarded as it comes (build contexts, archives, image loads)
    CHECKED = "checked"  # read whole (capped) and checked before anything is forwarded


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    body: Body = Body.NONE
    hijack: bool = False  # the engine may switch the connection to a raw stream
    admin_only: bool = False


@dataclass
class GateRequest:
    """A request the endpoint rules have recognised."""

    head: RequestHead
    route: Route
    version: str  # "" or "/v1.41"
    path: str  # decoded, without the version prefix
    params: dict[str, str]
    query: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def endpoint(self) -> str:
        return f"{self.head.method} {self.path}"

    @cached_property
    def target(self) -> str:
        """The canonical target of this request as recognised (encode_target), worked out
        once: a recognised list head is kept and read again for every request (KnownHeads)."""
        return encode_target(self.version, self.path, self.query)

    def query_first(self, key: str) -> str | None:
        """The value the engine reads (Go's Form.Get: the first one)."""
        for k, v in self.query:
            if k == key:
                return v
        return None

    def query_all(self, key: str) -> list[str]:
        return [v for k, v in self.query if k == key]


_ID = r"(?P<id>[^/]+)"
_NAME = r"(?P<name>.+)"


def _r(method: str, path: str, name: str, **kw: object) -> Route:
    return Route(method, re.compile(path + r"\Z"), name, **kw)  # type: ignore[arg-type]


_C = f"/containers/{_ID}"
ROUTES: tuple[Route, ...] = (
    # engine-wide, harmless
    _r("GET", "/_ping", "ping"),
    _r("HEAD", "/_ping", "ping"),
    _r("GET", "/version", "version"),
    _r("GET", "/info", "info"),
    _r("POST", "/auth", "auth", body=Body.STREAM),
    _r("GET", "/events", "events"),
    _r("GET", "/system/df", "system.df"),  # narrowed to the caller's share (systemdf.py)
    # containers
    _r("GET", "/containers/json", "containers.list"),
    _r("POST", "/containers/create", "containers.create", body=Body.CHECKED),
    _r("POST", "/containers/prune", "containers.prune"),
    _r("GET", f"{_C}/json", "container.inspect"),
    _r("GET", f"{_C}/top", "container.top"),
    _r("GET", f"{_C}/logs", "container.logs"),
    _r("GET", f"{_C}/changes", "container.changes"),
    _r("GET", f"{_C}/export", "container.export"),
    _r("GET", f"{_C}/stats", "container.stats"),
    _r("POST", f"{_C}/resize", "container.resize"),
    _r("POST", f"{_C}/start", "container.start"),
    _r("POST", f"{_C}/stop", "container.stop"),
    _r("POST", f"{_C}/restart", "container.restart"),
    _r("POST", f"{_C}/kill", "container.kill"),
    _r("POST", f"{_C}/update", "container.update", body=Body.CHECKED),
    _r("POST", f"{_C}/rename", "container.rename"),
    _r("POST", f"{_C}/pause", "container.pause"),
    _r("POST", f"{_C}/unpause", "container.unpause"),
    _r("POST", f"{_C}/attach", "container.attach", hijack=True),
    _r("GET", f"{_C}/attach/ws", "container.attach", hijack=True),
    _r("POST", f"{_C}/wait", "container.wait"),
    _r("DELETE", _C, "container.remove"),
    _r("HEAD", f"{_C}/archive", "container.archive_stat"),
    _r("GET", f"{_C}/archive", "container.archive_get"),
    _r("PUT", f"{_C}/archive", "container.archive_put", body=Body.STREAM),
    _r("POST", f"{_C}/exec", "container.exec", body=Body.CHECKED),
    _r("POST", "/commit", "container.commit", body=Body.STREAM),
    # exec instances
    _r("POST", f"/exec/{_ID}/start", "exec.start", body=Body.CHECKED, hijack=True),
    _r("POST", f"/exec/{_ID}/resize", "exec.resize"),
    _r("GET", f"/exec/{_ID}/json", "exec.inspect"),
    # images and builds
    _r("GET", "/images/json", "images.list"),
    _r("POST", "/images/create", "images.create", body=Body.STREAM),
    _r("POST", "/images/load", "images.load", body=Body.STREAM),
    _r("GET", "/images/get", "images.save"),
    _r("GET", "/images/search", "images.search"),
    _r("POST", "/images/prune", "images.prune"),
    _r("POST", "/build", "build", body=Body.STREAM),
    _r("POST", "/build/cancel", "build.cancel"),
    _r("POST", "/build/prune", "build.prune", admin_only=True),
    _r("POST", "/session", "build.session", hijack=True),
    _r("POST", "/grpc", "build.grpc", hijack=True),
    _r("GET", f"/images/{_NAME}/json", "image.inspect"),
    _r("GET", f"/images/{_NAME}/history", "image.history"),
    _r("GET", f"/images/{_NAME}/get", "image.save"),
    _r("POST", f"/images/{_NAME}/tag", "image.tag"),
    _r("POST", f"/images/{_NAME}/push", "image.push"),
    _r("DELETE", f"/images/{_NAME}", "image.remove"),
    # volumes
    _r("GET", "/volumes", "volumes.list"),
    _r("POST", "/volumes/create", "volumes.create", body=Body.CHECKED),
    _r("POST", "/volumes/prune", "volumes.prune"),
    _r("GET", f"/volumes/{_ID}", "volume.inspect"),
    _r("DELETE", f"/volumes/{_ID}", "volume.remove"),
    # networks
    _r("GET", "/networks", "networks.list"),
    _r("POST", "/networks/create", "networks.create", body=Body.CHECKED),
    _r("POST", "/networks/prune", "networks.prune"),
    _r("GET", f"/networks/{_ID}", "network.inspect"),
    _r("DELETE", f"/networks/{_ID}", "network.remove"),
    _r("POST", f"/networks/{_ID}/connect", "network.connect", body=Body.CHECKED),
    _r("POST", f"/networks/{_ID}/disconnect", "network.disconnect", body=Body.CHECKED),
)

# Families that act on the engine every user shares: admins only, whatever the method.
ADMIN_PREFIXES = (
    "/swarm",
    "/nodes",
    "/services",
    "/secrets",
    "/configs",
    "/plugins",
    "/distribution",
    "/tasks",
    "/system",
)

# In an admin-only family, but answered for users too (narrowed to their share).
USER_PATHS = frozenset({"/system/df"})

_VERSION = re.compile(r"/v([0-9.]+)(/.*)?")
# The oldest Engine API version the gate speaks (Docker 19.03). Older versions let a start
# request carry host settings (Binds, PidMode, Privileged: honoured below 1.24) and read fields
# under other names; every client in use negotiates 1.40 or newer.
MIN_API_VERSION = (1, 40)


def api_version(text: str) -> tuple[int, int] | None:
    """'1.41' → (1, 41); None when it is not MAJOR.MINOR."""
    major, dot, minor = text.partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CTL = re.compile(r"[\x00-\x1f\x7f]")


def _unquote_strict(text: str, *, plus_is_space: bool) -> str:
    if _BAD_PCT.search(text):
        raise HttpError(400, "invalid percent-encoding in the request target")
    if plus_is_space:
        text = text.replace("+", " ")
    raw = _PCT.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the request target is not UTF-8") from None


def split_target(target: str) -> tuple[str, list[tuple[str, str]]]:
    """Decoded path and decoded query pairs; HttpError 400 when the target is ambiguous."""
    if "#" in target:
        raise HttpError(400, "fragment in the request target")
    raw_path, _, raw_query = target.partition("?")
    try:
        raw_path.encode("ascii")
        raw_query.encode("ascii")
    except UnicodeEncodeError:
        raise HttpError(400, "raw non-ASCII in the request target") from None
    path = _unquote_strict(raw_path, plus_is_space=False)
    if _CTL.search(path):
        raise HttpError(400, "control character in the path")
    if "//" in path or any(s in (".", "..") for s in path.split("/")):
        raise HttpError(400, "the path is not in its clean form")
    if ";" in raw_query:
        raise HttpError(400, "';' in the query (the engine refuses it)")
    query: list[tuple[str, str]] = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        k, _, v = part.partition("=")
        query.append(
            (_unquote_strict(k, plus_is_space=True), _unquote_strict(v, plus_is_space=True))
        )
    return path, query


def encode_target(version: str, path: str, query: list[tuple[str, str]]) -> str:
    """The canonical request target forwarded to the engine."""
    out = version + quote(path, safe="/:@!$'()*,")
    if query:
        out += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    return out


def classify(head: RequestHead, is_admin: bool) -> GateRequest:
    """Match a request head against the allow-list; GateRefusal for unknown and admin-only
    endpoints (admins pass the latter), HttpError for unreadable targets."""
    path, query = split_target(head.target)
    version = ""
    m = _VERSION.fullmatch(path)
    if m is not None:
        version = f"/v{m.group(1)}"
        path = m.group(2) or "/"
        number = api_version(m.group(1))
        if number is None or number < MIN_API_VERSION:
            floor = ".".join(map(str, MIN_API_VERSION))
            raise GateRefusal(
                "request.api_version",
                f"Docker API version {m.group(1)} was refused (the gate speaks {floor} and newer)",
                summary=f"{head.method} {version}{path}",
            )
    shown = f"{head.method} {path}"
    for prefix in ADMIN_PREFIXES:
        if path in USER_PATHS and head.method == "GET":
            break
        if path == prefix or path.startswith(prefix + "/"):
            if not is_admin:
                raise GateRefusal("endpoint.admin_only", f"{shown} is for admins", summary=shown)
            return GateRequest(head, _ADMIN_ROUTE, version, path, {}, query)
    for route in ROUTES:
        if route.method != head.method:
            continue
        m = route.pattern.match(path)
        if m is None:
            continue
        if route.admin_only and not is_admin:
            raise GateRefusal("endpoint.admin_only", f"{shown} is for admins", summary=shown)
        return GateRequest(head, route, version, path, dict(m.groupdict()), query)
    raise GateRefusal(
        "endpoint.unknown",
        f"{shown} is not a Docker API call the ds01 gate allows",
        summary=shown,
    )


_ADMIN_ROUTE = Route("*", re.compile(".*"), "admin.passthrough", body=Body.STREAM)
