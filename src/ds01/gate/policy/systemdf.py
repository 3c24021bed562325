"""GET /system/df (`docker system df`): a user's own share of the engine's disk use.

The engine's answer covers everyone's images, containers, volumes and the shared build cache;
a user gets it narrowed by ds01's owner records (never labels): their containers, their
images (built, committed, imported or loaded by them — pulled and admin images are shared,
nobody's share), their volumes, and no build cache (it is the engine's, shared: admins prune
it). `LayersSize`, which the docker CLI shows as the images' size, becomes the bytes only the
user's images hold (each image's Size less its SharedSize). Admins get the engine's answer.
"""

from __future__ import annotations

import json
from typing import Any

from ds01.gate.policy.context import Ctx, Plan, passthrough
from ds01.services.owners import ObjectKind


async def system_df(ctx: Ctx, body: bytes | None) -> Plan:
    plan = passthrough(ctx)
    if ctx.is_admin:
        return plan
    me = ctx.caller.name

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status != 200 or reply is None:
            return None
        data = json.loads(reply)
        if not isinstance(data, dict):
            return b"{}"
        out: dict[str, Any] = {k: v for k, v in data.items() if k not in _NARROWED}
        for field, kind, key in _NARROWED_LISTS:
            items = [i for i in data.get(field) or [] if isinstance(i, dict)]
            if field not in data and not items:
                continue
            owners = await ctx.run(
                ctx.deps.containers.owners.owners, kind, [str(i.get(key, "")) for i in items]
            )
            out[field] = [i for i in items if owners.get(str(i.get(key, ""))) == me]
        if "BuildCache" in data:
            out["BuildCache"] = []
        if "LayersSize" in data:
            out["LayersSize"] = sum(
                max(0, _int(i.get("Size")) - max(0, _int(i.get("SharedSize"))))
                for i in out.get("Images") or []
            )
        return json.dumps(out).encode()

    plan.capture_response = True
    plan.after = after
    return plan


_NARROWED_LISTS = (
    ("Images", ObjectKind.IMAGE, "Id"),
    ("Containers", ObjectKind.CONTAINER, "Id"),
    ("Volumes", ObjectKind.VOLUME, "Name"),
)
_NARROWED = frozenset({"Images", "Containers", "Volumes", "BuildCache", "LayersSize"})


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
