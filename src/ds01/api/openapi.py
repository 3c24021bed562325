"""The OpenAPI description of the API, built from the same pydantic schemas the server uses."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel

from ds01 import __version__
from ds01.api import schemas as s


class Route(NamedTuple):
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    many: bool = False  # the response is a list of `response`


# Every endpoint the daemon serves; tests/test_openapi.py checks this against the router.
ROUTES: list[Route] = [
    Route("get", "/v1/health", "Daemon health", response=s.HealthOut),
    Route("get", "/v1/whoami", "Who ds01d thinks you are (SO_PEERCRED)", response=s.WhoAmIOut),
    Route("get", "/v1/gpu/status", "Every unit with its holder", response=s.StatusOut),
    Route("post", "/v1/allocations", "Reserve GPUs or MIG slices", s.AllocateIn, s.AllocationOut),
    Route(
        "get",
        "/v1/allocations",
        "Live allocations (yours; ?all=1 for admins)",
        response=s.AllocationOut,
        many=True,
    ),
    Route("get", "/v1/allocations/{id}", "One allocation", response=s.AllocationOut),
    Route(
        "post",
        "/v1/allocations/{id}/release",
        "Release an allocation",
        s.ReleaseIn,
        s.AllocationOut,
    ),
    Route("get", "/v1/quota", "Your limits, holdings and what is left", response=s.QuotaOut),
    Route(
        "get",
        "/v1/events",
        "Audit log (yours; admins: all, ?user=&kind=&since=)",
        response=s.EventOut,
        many=True,
    ),
    Route(
        "post",
        "/v1/admin/{op}",
        "Drain or undrain a unit or GPU (op: drain|undrain; admin)",
        s.DrainIn,
    ),
    Route(
        "post",
        "/v1/containers",
        "Deploy a container (NDJSON progress lines, then the result)",
        s.DeployIn,
        s.ContainerOut,
    ),
    Route(
        "get",
        "/v1/containers",
        "Your containers (?all=1 for admins)",
        response=s.ContainerOut,
        many=True,
    ),
    Route("get", "/v1/containers/{name}", "One of your containers", response=s.ContainerOut),
    Route(
        "post",
        "/v1/containers/{name}/{op}",
        "start | stop | restart (ContainerOut) or retire (container removed, GPUs released)",
        response=s.ContainerOut,
    ),
    Route("get", "/v1/containers/{name}/logs", "Output (?follow=1&tail=N), streamed"),
    Route("get", "/v1/containers/{name}/shell", "Interactive shell (WebSocket upgrade)"),
    Route(
        "get",
        "/v1/admin/orphans",
        "Containers running without a live allocation (admin)",
        response=s.OrphanOut,
        many=True,
    ),
    Route("get", "/v1/access", "Your bare-metal GPU access", response=s.AccessOut),
    Route("post", "/v1/admin/grants", "Grant bare-metal GPU access (admin)", s.GrantIn, s.GrantOut),
    Route("post", "/v1/admin/grants/revoke", "Revoke a grant (admin)", s.RevokeIn, s.GrantOut),
    Route(
        "get",
        "/v1/admin/grants",
        "Exempt users and live grants (admin)",
        response=s.AccessEntryOut,
        many=True,
    ),
    Route(
        "get",
        "/v1/admin/host-processes",
        "GPU processes on the bare host (admin)",
        response=s.HostProcessOut,
        many=True,
    ),
    Route("get", "/v1/openapi.json", "This description"),
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
