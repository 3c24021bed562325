"""The OpenAPI description of the API, built from the same pydantic schemas the server uses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ds01 import __version__
from ds01.api import schemas as s

# (method, path, summary, request schema, response schema, response is a list)
ROUTES: list[tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None, bool]] = [
    ("get", "/v1/health", "Daemon health", None, s.HealthOut, False),
    (
        "get",
        "/v1/whoami",
        "Who the daemon thinks you are (from SO_PEERCRED)",
        None,
        s.WhoAmIOut,
        False,
    ),
    ("get", "/v1/gpu/status", "Every unit with its holder", None, s.StatusOut, False),
    ("post", "/v1/allocations", "Reserve GPUs or MIG slices", s.AllocateIn, s.AllocationOut, False),
    (
        "get",
        "/v1/allocations",
        "Live allocations (yours; ?all=1 for admins)",
        None,
        s.AllocationOut,
        True,
    ),
    ("get", "/v1/allocations/{id}", "One allocation", None, s.AllocationOut, False),
    (
        "post",
        "/v1/allocations/{id}/release",
        "Release an allocation",
        s.ReleaseIn,
        s.AllocationOut,
        False,
    ),
    ("get", "/v1/quota", "Your limits, holdings and what is left", None, s.QuotaOut, False),
    ("get", "/v1/events", "Audit log (yours; admins: all, ?user=)", None, s.EventOut, True),
    ("post", "/v1/admin/drain", "Stop handing out a unit or GPU (admin)", s.DrainIn, None, False),
    ("post", "/v1/admin/undrain", "Hand out a drained unit again (admin)", s.DrainIn, None, False),
]


def openapi_document() -> dict[str, Any]:
    components: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"application/json": {"schema": ref(s.ErrorOut)}}
    paths: dict[str, Any] = {}
    for method, path, summary, body, resp, many in ROUTES:
        op: dict[str, Any] = {"summary": summary, "responses": {}}
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(body)}},
            }
        if resp is not None:
            schema = {"type": "array", "items": ref(resp)} if many else ref(resp)
            op["responses"]["200"] = {
                "description": "OK",
                "content": {"application/json": {"schema": schema}},
            }
        else:
            op["responses"]["200"] = {"description": "OK"}
        for code, what in (
            ("400", "Bad request"),
            ("403", "Not allowed"),
            ("404", "Not found"),
            ("409", "Refused by policy"),
        ):
            op["responses"][code] = {"description": what, "content": error}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ds01 API",
            "version": __version__,
            "description": "HTTP/JSON on the Unix socket api.sock. The caller's identity is "
            "taken from the socket's peer credentials (SO_PEERCRED); no request field can "
            "name another user.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
