"""The API server: aiohttp on a Unix socket, identity from SO_PEERCRED, one error mapping.

build_app registers each endpoint of the route table (api/routes.py) that the daemon's parts
allow, behind one middleware: the caller from the socket's peer credentials (CallerCache: NSS
runs off the event loop), then the handler, then the answer. Handlers live in modules named
after what they serve and make every blocking call through api/http.py's off_loop: the event
loop also serves the Docker gate, and nothing a request waits for may stall it.

Every answer to a request that reached a handler is JSON: ds01 errors by kind (status_for),
aiohttp's own 4xx (a body over MAX_BODY, a body read too slowly) as usage errors, and anything
unexpected as a 500 "internal" error whose traceback goes to the log at a bounded rate.
Connection limits and timeouts: api/site.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiohttp import web

from ds01.api import convert
from ds01.api.http import API_LIMITS, CALLER, DEPS, LIMITS, MAX_BODY, ApiDeps, not_found
from ds01.api.routes import ROUTES, Handler, Needs, Route
from ds01.api.site import GuardedSite, Guards, HttpLog
from ds01.errors import (
    Ds01Error,
    NotFound,
    PermissionDenied,
    Refusal,
    RuntimeUnavailable,
    StateDiskFull,
    UsageError,
)
from ds01.identity import peer_credentials
from ds01.listener import ConnectionLimits, RateLimitedLog

__all__ = ["API_LIMITS", "MAX_BODY", "ApiDeps", "build_app", "serve", "status_for"]

log = logging.getLogger("ds01d.api")


def status_for(err: Ds01Error) -> int:
    if isinstance(err, UsageError):
        return 400
    if isinstance(err, PermissionDenied):
        return 403
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Refusal):
        return 409
    if isinstance(err, RuntimeUnavailable):
        return 503
    if isinstance(err, StateDiskFull):
        return 507  # Insufficient Storage: nothing was saved; works again once there is space
    return 500


def error_response(err: Ds01Error) -> web.Response:
    return web.json_response(convert.error_body(err).model_dump(), status=status_for(err))


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (413, 408, 405, …) as ds01 error bodies."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        what = f"the request body is too large (the limit is {MAX_BODY} bytes)"
    elif isinstance(exc, web.HTTPRequestTimeout):
        what = "the request body came too slowly"
    else:
        what = f"the request was refused: {exc.reason}"
    resp = web.json_response(
        {"error": {"kind": "usage", "what": what, "why": None, "fix": None, "reason": None}},
        status=exc.status,
    )
    if exc.status in (408, 413):
        resp.force_close()  # what is left of the body is not read
    return resp


_unexpected = RateLimitedLog(log)


@web.middleware
async def identity_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        raise web.HTTPBadRequest(text="connection closed")
    try:
        pid, uid, gid = peer_credentials(sock)
        request[CALLER] = await request.config_dict[DEPS].callers.get(pid, uid, gid)
        return await handler(request)
    except Ds01Error as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        _unexpected.log(
            logging.ERROR,
            "handler",
            "%s %s failed unexpectedly",
            request.method,
            request.path[:200],
            exc_info=True,
        )
        return error_response(
            Ds01Error(
                "ds01d failed on this request (an internal error)",
                fix="Tell an admin; the ds01d log has the details (journalctl -u ds01d).",
            )
        )


def served(route: Route, deps: ApiDeps) -> bool:
    """Whether the daemon's parts in `deps` serve this route."""
    if route.needs is Needs.CONTAINERS:
        return deps.containers is not None
    if route.needs is Needs.GRANTS:
        return deps.grants is not None
    if route.needs is Needs.LIFECYCLE:
        return deps.exemptions is not None
    if route.needs is Needs.QUEUE:
        return deps.queue is not None
    return True


def build_app(deps: ApiDeps) -> web.Application:
    app = web.Application(middlewares=[identity_and_errors], client_max_size=MAX_BODY)
    app[DEPS] = deps
    for route in ROUTES:
        if not served(route, deps):
            continue
        if route.method == "get":
            app.router.add_get(route.path, route.handler)  # and HEAD
        else:
            app.router.add_route(route.method.upper(), route.path, route.handler)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def serve(
    app: web.Application, path: str, mode: int = 0o666, limits: ConnectionLimits = API_LIMITS
) -> web.AppRunner:
    """Listen on a Unix socket with the given mode (0666: every local user may ask), with the
    connection limits and timeouts of api/site.py."""
    app[LIMITS] = limits
    guards = Guards()
    app.middlewares.insert(0, guards.middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        logger=HttpLog(logging.getLogger("ds01d.api")),
        # Ours (api/site.py) close idle connections and slow heads; aiohttp's is only a backstop.
        keepalive_timeout=limits.idle_timeout_s + limits.head_timeout_s,
    )
    await runner.setup()
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(512)
    site = GuardedSite(runner, sock, limits, guards)
    await site.start()
    return runner
