"""Endpoints about ds01d itself and the caller: health, who am I, the API description.

No I/O here: health reads what ds01d keeps in memory, whoami the caller the middleware found.
"""

from __future__ import annotations

import functools
import json

from aiohttp import web

from ds01 import __version__
from ds01.api.http import caller_of, deps_of, ok
from ds01.api.schemas import HealthOut, WhoAmIOut
from ds01.identity import is_admin


async def health(request: web.Request) -> web.Response:
    deps = deps_of(request)
    return ok(
        HealthOut(
            status="ok",
            version=__version__,
            backend=deps.backend_name,
            docker=deps.docker_state(),
            loops=deps.loops(),
            invariants=deps.invariants(),
            restart_needed=deps.restart_needed(),
        )
    )


async def whoami(request: web.Request) -> web.Response:
    c = caller_of(request)
    return ok(
        WhoAmIOut(
            user=c.name,
            uid=c.uid,
            groups=sorted(c.groups),
            admin=is_admin(c, deps_of(request).allocations.config),
        )
    )


@functools.cache
def _description() -> str:
    # Imported here: api.openapi reads the route table, which names this module's handlers.
    from ds01.api.openapi import openapi_document

    return json.dumps(openapi_document())


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(text=_description(), content_type="application/json")
