"""Narrow list, event and prune requests to the caller's own objects by adding the label filter
`ds01.owner=<caller>` to the engine's `filters` query parameter. The engine ANDs label filters,
so a user's own filters can only narrow further, never widen.

The parameter is parsed strictly (one `filters` parameter, a JSON object of lists or of
{value: true} maps, each key once) and re-encoded in the map form every API version reads.
"""

from __future__ import annotations

import json
from typing import Any

from ds01.gate.policy.context import Ctx, Plan
from ds01.gate.policy.jsonbody import parse_object
from ds01.gate.refusal import GateRefusal
from ds01.runtime.spec import LABEL_OWNER


def parse(query: list[tuple[str, str]]) -> dict[str, dict[str, bool]]:
    values = [v for k, v in query if k == "filters"]
    if len(values) > 1:
        raise GateRefusal("request.query", "the filters parameter was sent more than once")
    if not values or not values[0].strip():
        return {}
    try:
        data = parse_object(values[0].encode(), "filters")
    except GateRefusal:
        raise GateRefusal("request.query", "the filters parameter is not a JSON object") from None
    out: dict[str, dict[str, bool]] = {}
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = {v: True for v in value}
        elif isinstance(value, dict) and all(isinstance(v, bool) for v in value.values()):
            out[key] = {k: v for k, v in value.items() if v}
        else:
            raise GateRefusal("request.query", f"the filter {key!r} is not a list of strings")
    return out


def with_owner(ctx: Ctx, query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    f: dict[str, Any] = parse(query)
    f.setdefault("label", {})[f"{LABEL_OWNER}={ctx.caller.name}"] = True
    rest = [(k, v) for k, v in query if k != "filters"]
    return [*rest, ("filters", json.dumps(f, separators=(",", ":")))]


async def own_only(ctx: Ctx, body: bytes | None) -> Plan:
    """GET /containers/json, GET /events, GET /volumes: the caller's own (admins: all)."""
    query = list(ctx.req.query)
    if not ctx.is_admin:
        query = with_owner(ctx, query)
    return Plan(ctx.req.path, query)
