"""The gate's policy: one small module per rule family, and `decide()`, which sends each
recognised endpoint to its rule and returns the Plan for forwarding it.

    endpoints.py          allow-list, admin-only families, target normalisation
    create.py             POST /containers/create body rules and stamping
    mounts.py             binds, mounts and volumes in a create
    limits.py             resource caps and defaults
    gpus.py               DeviceRequests → allocation → exact UUIDs
    ownership.py          container/exec-scoped operations; start/remove and allocations
    filters.py            list/events narrowed to the caller's objects
    systemdf.py           docker system df narrowed to the caller's share
    named_user.py         a named --user with host directories: the image's numbers, if yours
    images.py             tags and private images, pulls, imports, loads, builds, prunes
    volumes_networks.py   volumes and networks: owner labels, drivers
    jsonbody.py           strict JSON reading shared by the body rules

Endpoints with no entry in RULES are forwarded unchanged (they are in the allow-list because
they are harmless for any user: _ping, version, info, image pulls and listings, …).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ds01.gate.policy import create, filters, images, ownership, systemdf
from ds01.gate.policy import volumes_networks as vn
from ds01.gate.policy.context import Ctx, Plan, passthrough

Rule = Callable[[Ctx, bytes | None], Awaitable[Plan]]

RULES: dict[str, Rule] = {
    "events": filters.own_only,
    "containers.list": filters.own_only,
    "containers.create": create.check_create,
    "containers.prune": vn.prune_own,
    "container.commit": images.commit,
    "exec.start": ownership.exec_op,
    "exec.resize": ownership.exec_op,
    "exec.inspect": ownership.exec_op,
    "ping": images.ping,
    "images.list": images.listing,
    "images.create": images.create,
    "images.load": images.load,
    "images.save": images.export,
    "images.prune": images.prune,
    "build": images.build,
    "build.session": images.buildkit,
    "build.grpc": images.buildkit,
    "image.inspect": images.inspect,
    "image.history": images.inspect,
    "image.save": images.export,
    "image.tag": images.tag,
    "image.push": images.export,
    "image.remove": images.remove,
    "volumes.list": filters.own_only,
    "volumes.create": vn.volumes_create,
    "volumes.prune": vn.prune_own,
    "volume.inspect": vn.volume_op,
    "volume.remove": vn.volume_op,
    "networks.list": vn.networks_list,
    "networks.create": vn.networks_create,
    "networks.prune": vn.prune_own,
    "network.inspect": vn.network_op,
    "network.remove": vn.network_op,
    "network.connect": vn.network_op,
    "network.disconnect": vn.network_op,
    "system.df": systemdf.system_df,
}


async def decide(ctx: Ctx, body: bytes | None) -> Plan:
    """The Plan for a recognised request; raises GateRefusal or LocalReply."""
    name = ctx.req.name
    rule = RULES.get(name)
    if rule is None and name.startswith("container.") and name != "container.commit":
        rule = ownership.container_op
    if rule is None:
        return passthrough(ctx)
    return await rule(ctx, body)
