"""Judge what the engine stored, not only what was asked: the gate's use of the one invariant
checker (services/invariants.py) after a container create or update and before anything
makes a container run or run more (start, restart, unpause, exec). Attaching is not judged: it
only connects to the streams of what already runs or waits for its judged start.

The inspect data is read fresh from the engine each time (never from the ownership cache):
an update, an old API version or another object may have changed what a container is.
"""

from __future__ import annotations

from typing import Any

from ds01.gate.engine import seg
from ds01.gate.policy.context import Ctx
from ds01.gate.refusal import GateRefusal, LocalReply
from ds01.identity import Caller
from ds01.services.invariants import Violation, describe, expectation_for, violations
from ds01.services.owners import ObjectKind


async def fresh_inspect(ctx: Ctx, container_id: str) -> dict[str, Any]:
    status, data = await ctx.engine.get(f"/containers/{seg(container_id)}/json")
    if status != 200 or not isinstance(data, dict):
        raise LocalReply(502, f"ds01: the engine could not look up container {container_id!r}")
    return data


async def judge(
    ctx: Ctx, data: dict[str, Any], owner: Caller, units: tuple[str, ...] | None
) -> list[Violation]:
    """The invariants `data` (the engine's inspect of one container) breaks for `owner`."""
    driver = await ctx.cgroup_driver()
    runtime = await ctx.default_runtime()
    owners = ctx.deps.containers.owners

    def container_owner(ref: str) -> str | None:
        return owners.owner(ObjectKind.CONTAINER, ref)

    def check() -> list[Violation]:
        exp = expectation_for(
            owner,
            ctx.config,
            cgroup_driver=driver,
            default_runtime=runtime,
            units=units,
            container_owner=container_owner,
        )
        return violations(data, exp)

    return await ctx.run(check)


def refusal(name: str, action: str, found: list[Violation]) -> GateRefusal:
    return GateRefusal(
        "container.invariant",
        f"{action} container {name!r} was refused: {describe(found)}",
        summary=f"{action} {name}: {', '.join(sorted({v.code for v in found}))}",
    )
