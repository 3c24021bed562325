"""GET /v1/top: everything `ds01 top` shows, in one answer (cli/top.py).

Each part is asked of the same route table as its own endpoint: the router resolves the part's
path and its handler runs with this request's caller, checking that caller's rights and
privacy itself. So this answer holds nothing the caller could not get one request at a time;
the admin parts are asked for only when the caller is an admin. A part whose endpoint this
ds01d does not serve (no queue, no grants, no containers) is null or empty, as the full
command line shows it.

Why one answer: eight requests (eight connections, eight answers parsed) were ~5 ms of
`ds01 top --once --json`'s ~45 ms on a 2-core VM, where the aim is 4× `python3 -I -c pass`.
"""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from ds01.api.http import caller_of, deps_of, not_found
from ds01.errors import NotFound, UsageError
from ds01.identity import is_admin

# (key in the answer, path, query, what it is when this ds01d does not serve the path)
Part = tuple[str, str, dict[str, str], bytes | None]


def _parts(admin: bool, events: str) -> list[Part]:
    mine = {"all": "1", "gpus": "1"} if admin else {"gpus": "1"}
    parts: list[Part] = [
        ("whoami", "/v1/whoami", {}, None),
        ("status", "/v1/gpu/status", {}, None),
        ("allocations", "/v1/allocations", mine, None),
        ("queue", "/v1/queue", {"all": "1"}, b"null"),
        ("events", "/v1/events", {"limit": events}, None),
    ]
    if admin:
        parts += [
            ("health", "/v1/health", {}, None),
            ("host_processes", "/v1/admin/host-processes", {}, b"[]"),
            ("orphans", "/v1/admin/orphans", {}, b"[]"),
        ]
    return parts


async def top(request: web.Request) -> web.Response:
    events = request.query.get("events", "10")
    if not (events.isascii() and events.isdigit() and 1 <= int(events) <= 1000):
        raise UsageError("events must be a number from 1 to 1000", fix="Ask with ?events=10.")
    admin = is_admin(caller_of(request), deps_of(request).allocations.config)
    pieces = [b'"admin_parts":' + (b"true" if admin else b"false")]
    for key, path, query, missing in _parts(admin, events):
        pieces.append(b'"' + key.encode() + b'":' + await _part(request, path, query, missing))
    if not admin:
        pieces.append(b'"health":null,"host_processes":null,"orphans":null')
    return web.Response(body=b"{" + b",".join(pieces) + b"}", content_type="application/json")


async def _part(
    request: web.Request, path: str, query: dict[str, str], missing: bytes | None
) -> bytes:
    """The body `GET path?query` answers this caller with, or `missing` when this ds01d does
    not serve the path. A refusal or error is raised as the part's handler raised it: the
    whole answer is then that error."""
    sub = request.clone(rel_url=URL.build(path=path, query=query))
    match = await request.app.router.resolve(sub)
    if match.handler is not_found:  # the catch-all: this ds01d does not serve `path`
        if missing is None:
            raise NotFound(f"no API endpoint GET {path} in this ds01d")
        return missing
    response = await match.handler(sub)
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        raise TypeError(f"{path} did not answer with a body")
    return response.body
