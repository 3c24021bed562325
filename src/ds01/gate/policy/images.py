"""Images are shared: anyone may pull, build, list, tag and inspect them. Removing an image
that another user's container runs on is refused (asked of the engine: the image's ID against
every container's ImageID). Builds may not use the host's network or another cgroup parent;
imports and builds from URLs are refused (the engine would fetch them as root, from inside the
host's network); pruning all unused images (not just dangling ones) is for admins.
"""

from __future__ import annotations

from ds01.gate.engine import query_json, seg
from ds01.gate.policy import filters
from ds01.gate.policy.context import Ctx, Plan, passthrough
from ds01.gate.refusal import GateRefusal
from ds01.runtime.spec import LABEL_OWNER

# BuildKit's marker for "the context comes over the session", not a URL.
_CLIENT_SESSION = "client-session"


async def remove(ctx: Ctx, body: bytes | None) -> Plan:
    name = ctx.req.params["name"]
    status, image = await ctx.engine.get(f"/images/{seg(name)}/json")
    if status != 200 or not isinstance(image, dict) or ctx.is_admin:
        return passthrough(ctx)  # the engine answers "no such image" itself
    image_id = str(image.get("Id", ""))
    status, containers = await ctx.engine.get(
        "/containers/json?all=1&filters=" + query_json({"ancestor": [image_id]})
    )
    others = sorted(
        {
            str(c.get("Names", ["?"])[0]).lstrip("/")
            for c in containers or []
            if isinstance(c, dict)
            and c.get("ImageID") == image_id
            and (c.get("Labels") or {}).get(LABEL_OWNER) != ctx.caller.name
        }
    )
    if others:
        raise GateRefusal(
            "image.in_use",
            f"removing image {name!r} was refused: another user's container uses it",
            summary=f"image {name} used by {len(others)} container(s)",
        )
    return passthrough(ctx)


async def create(ctx: Ctx, body: bytes | None) -> Plan:
    """POST /images/create: pull (fromImage) or import from the request body (fromSrc=-)."""
    src = ctx.req.query_all("fromSrc")
    if any(s not in ("", "-") for s in src):
        raise GateRefusal(
            "image.import_url",
            f"importing an image from {src[0]!r} was refused",
            summary=f"fromSrc={src[0]}",
        )
    return passthrough(ctx)


async def build(ctx: Ctx, body: bytes | None) -> Plan:
    for key, bad in (("networkmode", "host"), ("cgroupparent", None)):
        for value in ctx.req.query_all(key):
            if (bad is None and value) or (bad is not None and value.lower() == bad):
                raise GateRefusal(
                    "build.option",
                    f"docker build with {key}={value} was refused",
                    summary=f"build {key}={value}",
                )
    for value in ctx.req.query_all("remote"):
        if value and value != _CLIENT_SESSION:
            raise GateRefusal(
                "image.import_url",
                f"building from the remote context {value!r} was refused",
                fix="Clone or download it yourself, then build from the local directory.",
                summary=f"build remote={value}",
            )
    return passthrough(ctx)


async def prune(ctx: Ctx, body: bytes | None) -> Plan:
    if not ctx.is_admin:
        dangling = filters.parse(ctx.req.query).get("dangling", {})
        if any(v.lower() in ("false", "0") for v in dangling):
            raise GateRefusal(
                "image.prune_all",
                "pruning all unused images was refused",
                summary="images prune dangling=false",
            )
    return passthrough(ctx)
