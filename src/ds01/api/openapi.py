"""The OpenAPI description of the API, written from the route table the server registers
(api/routes.py) and the pydantic schemas its handlers use. docs/openapi.json is its copy."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ds01 import __version__
from ds01.api import schemas as s
from ds01.api.routes import ROUTES


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
    for route in ROUTES:
        op: dict[str, Any] = {"summary": route.summary, "responses": {}}
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body)}},
            }
        if route.response is not None:
            schema = (
                {"type": "array", "items": ref(route.response)}
                if route.many
                else ref(route.response)
            )
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
        paths.setdefault(route.documented_path, {})[route.method] = op
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
