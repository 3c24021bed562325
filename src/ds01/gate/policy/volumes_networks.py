"""Volumes and networks: each belongs to the user who made it through the gate — the owner
record (services/owners.py) written when the engine has made it, keyed by the volume's name or
the network's full ID. The gate also stamps a ds01.owner label (ds01.* labels from users are
refused) as a display copy, and to adopt objects made before owner records (adopt_labelled).
Others' are refused for inspect/remove/connect; lists are filtered by the records. Built-in
networks (bridge, host, none) are shared and read-only.

Prunes of volumes and networks use the engine's label filter ds01.owner=<caller>: unlike a
container's, a volume's or network's labels are set only by the gate (every create and volume
mount that names a ds01.* label is refused; an image cannot label either; the engine has no call
that changes their labels later), so the label and the record agree.

Volume and network driver options are refused: the local driver's `type=none,o=bind,device=…`
would bind any host path into a volume, and macvlan/ipvlan attach to host interfaces.
"""

from __future__ import annotations

import json
from typing import Any

from ds01.gate.engine import query_json, seg
from ds01.gate.policy import filters
from ds01.gate.policy.context import OWNER_KEY, Ctx, Plan, recorded_owner
from ds01.gate.policy.jsonbody import (
    as_bool,
    as_list,
    as_str,
    as_str_map,
    canonical,
    dump,
    parse_object,
    short,
)
from ds01.gate.refusal import GateRefusal, LocalReply
from ds01.runtime.spec import LABEL_MANAGED, LABEL_OWNER, LABEL_PREFIX
from ds01.services.owners import ObjectKind

BUILTIN_NETWORKS = frozenset({"bridge", "host", "none"})
VOLUME_FIELDS = ("Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec")
NETWORK_FIELDS = (
    "Name",
    "CheckDuplicate",
    "Driver",
    "Scope",
    "Internal",
    "Attachable",
    "Ingress",
    "IPAM",
    "EnableIPv6",
    "Options",
    "Labels",
    "ConfigOnly",
    "ConfigFrom",
)
IPAM_FIELDS = ("Driver", "Config", "Options")
CONNECT_FIELDS = ("Container", "EndpointConfig", "Force")


def owner_labels(ctx: Ctx) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_OWNER: ctx.caller.name}


def check_labels(labels: dict[str, str], what: str) -> None:
    for key, value in labels.items():
        if key.casefold().startswith(LABEL_PREFIX):
            raise GateRefusal(
                "create.reserved_label",
                f"{what} with label {key} was refused: ds01.* labels are set by ds01",
                summary=f"label {key}={short(value)}",
            )


# ---- owner records --------------------------------------------------------------------


async def adopt_labelled(ctx: Ctx) -> None:
    """Once per daemon, at first use: record the owners of volumes and networks that carry a
    ds01.owner label but no owner record (made by the gate before it kept records, or in the
    moment between the engine's answer and the record when ds01d stopped).

    Taking the label as the owner is sound here, and only here: only the gate ever set a
    ds01.* label on a volume or network (see the module docstring). Existing records win.
    """
    book = ctx.deps.containers.owners
    if book.labelled_adopted:
        return
    q = query_json({"label": [LABEL_OWNER]})
    v_status, v_data = await ctx.engine.get(f"/volumes?filters={q}")
    n_status, n_data = await ctx.engine.get(f"/networks?filters={q}")
    if v_status != 200 or n_status != 200:
        return  # the next request tries again
    found: list[tuple[ObjectKind, str, str]] = []
    volumes = v_data.get("Volumes") if isinstance(v_data, dict) else None
    for kind, key, items in (
        (ObjectKind.VOLUME, "Name", volumes or []),
        (ObjectKind.NETWORK, "Id", n_data if isinstance(n_data, list) else []),
    ):
        for item in items:
            owner = _label_owner(item)
            if owner is not None and isinstance(item.get(key), str):
                found.append((kind, item[key], owner))
    await ctx.run(book.adopt_all, found, origin="adopted")
    book.labelled_adopted = True


def _label_owner(item: Any) -> str | None:
    """The gate's ds01.owner stamp on a volume or network (engine data)."""
    labels = item.get("Labels") if isinstance(item, dict) else None
    owner = labels.get(LABEL_OWNER) if isinstance(labels, dict) else None
    return owner if isinstance(owner, str) and owner else None


async def _owner(ctx: Ctx, kind: ObjectKind, key: str) -> str | None:
    await adopt_labelled(ctx)
    return await ctx.run(ctx.deps.containers.owners.owner, kind, key)


# ---- volumes ----------------------------------------------------------------------------


async def volume_owner(ctx: Ctx, name: str) -> tuple[bool, str | None]:
    """(exists, recorded owner)."""
    status, data = await ctx.engine.get(f"/volumes/{seg(name)}")
    if status == 404:
        return False, None
    if status != 200 or not isinstance(data, dict):
        raise LocalReply(502, f"ds01: the engine could not look up volume {name!r} ({status})")
    return True, await _owner(ctx, ObjectKind.VOLUME, name)


async def _before_volume_create(ctx: Ctx, name: str) -> None:
    """A volume of this name does not exist: a record left by one removed behind the gate's
    back (docker rm -v, an admin) is stale; drop it so the new volume's owner can be
    recorded."""
    await ctx.run(ctx.deps.containers.owners.forget, ObjectKind.VOLUME, name)


async def _record_volume(ctx: Ctx, reply: Any) -> str | None:
    """Record the caller as the owner of the volume the engine answered with — when it is the
    one the gate just made for them. The engine answers a create of an existing name with the
    existing volume: its ds01.owner stamp then names whoever made it first (a race between two
    creates of one name), and the record is theirs. Existing records are never overwritten.
    Returns the recorded owner."""
    name = reply.get("Name") if isinstance(reply, dict) else None
    if not isinstance(name, str) or not name:
        return None
    book = ctx.deps.containers.owners
    if _label_owner(reply) == ctx.caller.name:
        await ctx.run(book.adopt, ObjectKind.VOLUME, name, ctx.caller.name, origin="gate")
    return await ctx.run(book.owner, ObjectKind.VOLUME, name)


async def require_volume(ctx: Ctx, name: str, rule: str, action: str) -> bool:
    """Refuse another user's volume; True when it exists."""
    exists, owner = await volume_owner(ctx, name)
    if exists and owner != ctx.caller.name and not ctx.is_admin:
        raise GateRefusal(
            rule,
            f"you may not {action} volume {name!r}: it is not yours",
            summary=f"volume {name}",
        )
    return exists


async def create_volume(ctx: Ctx, name: str) -> None:
    """Make a named volume a container create refers to, with the caller as owner (Docker would
    otherwise make it without one)."""
    await _before_volume_create(ctx, name)
    status, data = await ctx.engine.request(
        "POST", "/volumes/create", {"Name": name, "Labels": owner_labels(ctx)}
    )
    if status not in (200, 201):
        msg = data.get("message") if isinstance(data, dict) else status
        raise LocalReply(status if status >= 400 else 502, f"cannot create volume {name}: {msg}")
    owner = await _record_volume(ctx, data)
    if owner != ctx.caller.name and not ctx.is_admin:
        raise GateRefusal(
            "create.volume_owner",
            f"you may not mount volume {name!r}: another user made it just now",
            summary=f"volume {name}",
        )


async def volumes_create(ctx: Ctx, body: bytes | None) -> Plan:
    spec = canonical(
        parse_object(body or b"", "volume create", empty_ok=True),
        VOLUME_FIELDS,
        "",
        rule="volume.driver",
    )
    driver = as_str(spec.get("Driver"), "Driver")
    if driver not in ("", "local") or as_str_map(spec.get("DriverOpts"), "DriverOpts"):
        raise GateRefusal(
            "volume.driver",
            f"a volume with driver {driver or 'local'} and options "
            f"{short(spec.get('DriverOpts') or {})} was refused",
            summary=f"volume create {short(spec)}",
        )
    labels = as_str_map(spec.get("Labels"), "Labels")
    check_labels(labels, "volume create")
    name = as_str(spec.get("Name"), "Name")
    if name and not await require_volume(ctx, name, "volume.not_owner", "reuse"):
        await _before_volume_create(ctx, name)
    spec["Labels"] = {**labels, **owner_labels(ctx)}
    plan = Plan(ctx.req.path, list(ctx.req.query), body=dump(spec))

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status in (200, 201) and reply:
            await _record_volume(ctx, json.loads(reply))
        return None

    plan.capture_response = True
    plan.after = after
    return plan


async def volume_op(ctx: Ctx, body: bytes | None) -> Plan:
    name = ctx.req.params["id"]
    action = "remove" if ctx.req.head.method == "DELETE" else "inspect"
    exists = await require_volume(ctx, name, "volume.not_owner", action)
    if not exists:
        raise LocalReply(404, f"get {name}: no such volume")
    plan = Plan(ctx.req.path, list(ctx.req.query))
    if action == "remove":

        async def after(status: int, _reply: bytes | None) -> bytes | None:
            if status == 204:  # a later volume of this name is someone else's to record
                await ctx.run(ctx.deps.containers.owners.forget, ObjectKind.VOLUME, name)
            return None

        plan.after = after
    return plan


# ---- networks ---------------------------------------------------------------------------


async def network_info(ctx: Ctx, ref: str) -> dict[str, Any] | None:
    """The engine's data for a network (by name, ID or ID prefix) with its recorded owner."""
    status, data = await ctx.engine.get(f"/networks/{seg(ref)}")
    if status == 404:
        return None
    if status != 200 or not isinstance(data, dict):
        raise LocalReply(502, f"ds01: the engine could not look up network {ref!r} ({status})")
    data[OWNER_KEY] = await _owner(ctx, ObjectKind.NETWORK, str(data.get("Id", "")))
    return data


def network_owner(data: dict[str, Any]) -> str | None:
    """The recorded owner of a network from network_info() (context.recorded_owner)."""
    return recorded_owner(data)


def is_builtin(data: dict[str, Any]) -> bool:
    return str(data.get("Name", "")) in BUILTIN_NETWORKS and network_owner(data) is None


async def require_network(ctx: Ctx, ref: str, action: str, *, builtin_ok: bool) -> dict[str, Any]:
    data = await network_info(ctx, ref)
    if data is None:
        raise LocalReply(404, f"network {ref} not found")
    if ctx.is_admin or network_owner(data) == ctx.caller.name:
        return data
    if builtin_ok and is_builtin(data):
        return data
    raise GateRefusal(
        "network.not_owner" if not ctx.req.name.startswith("containers.") else "create.network",
        f"you may not {action} network {ref!r}: it is not yours",
        summary=f"network {ref}",
    )


async def networks_create(ctx: Ctx, body: bytes | None) -> Plan:
    spec = canonical(
        parse_object(body or b"", "network create"), NETWORK_FIELDS, "", rule="network.driver"
    )
    driver = as_str(spec.get("Driver"), "Driver")
    ipam = canonical(spec.get("IPAM"), IPAM_FIELDS, "IPAM.", rule="network.driver")
    if (
        driver not in ("", "bridge")
        or as_str_map(spec.get("Options"), "Options")
        or as_str_map(ipam.get("Options"), "IPAM.Options")
        or as_str(ipam.get("Driver"), "IPAM.Driver") not in ("", "default")
        or as_bool(spec.get("Ingress"), "Ingress")
        or as_bool(spec.get("ConfigOnly"), "ConfigOnly")
        or spec.get("ConfigFrom")
        or as_str(spec.get("Scope"), "Scope") not in ("", "local")
    ):
        raise GateRefusal(
            "network.driver",
            f"a network with driver {driver or 'bridge'} and options "
            f"{short({k: spec.get(k) for k in ('Options', 'IPAM', 'Scope') if spec.get(k)})} "
            "was refused",
            summary=f"network create {short(spec)}",
        )
    subnets = [c for c in as_list(ipam.get("Config"), "IPAM.Config") if c]
    if subnets and not ctx.is_admin:
        # Each bridge network's subnet becomes a route on the host: one that overlaps the lab's
        # own networks would send the host's traffic for them into a user's bridge.
        raise GateRefusal(
            "network.subnet",
            f"a network with the address range {short(subnets)} was refused",
            summary=f"network create IPAM.Config={short(subnets)}",
        )
    labels = as_str_map(spec.get("Labels"), "Labels")
    check_labels(labels, "network create")
    spec["Labels"] = {**labels, **owner_labels(ctx)}
    if ipam:
        spec["IPAM"] = ipam
    plan = Plan(ctx.req.path, list(ctx.req.query), body=dump(spec))
    book, me = ctx.deps.containers.owners, ctx.caller.name

    async def after(status: int, reply: bytes | None) -> bytes | None:
        # A create always makes a new network (a new ID): the record is the caller's.
        net_id = json.loads(reply).get("Id") if status == 201 and reply else None
        if isinstance(net_id, str) and net_id:
            await ctx.run(book.record, ObjectKind.NETWORK, net_id, me, origin="gate")
        return None

    plan.capture_response = True
    plan.after = after
    return plan


async def network_op(ctx: Ctx, body: bytes | None) -> Plan:
    from ds01.gate.policy import ownership

    ref = ctx.req.params["id"]
    name = ctx.req.name
    if name == "network.inspect":
        data = await require_network(ctx, ref, "inspect", builtin_ok=True)
        return Plan(f"/networks/{data['Id']}", list(ctx.req.query))
    if name == "network.remove":
        data = await require_network(ctx, ref, "remove", builtin_ok=False)
        plan = Plan(f"/networks/{data['Id']}", list(ctx.req.query))
        net_id = str(data["Id"])

        async def after(status: int, _reply: bytes | None) -> bytes | None:
            if status == 204:
                await ctx.run(ctx.deps.containers.owners.forget, ObjectKind.NETWORK, net_id)
            return None

        plan.after = after
        return plan
    data = await require_network(ctx, ref, "connect containers to", builtin_ok=True)
    spec = canonical(
        parse_object(body or b"", f"network {name.split('.')[1]}"),
        CONNECT_FIELDS,
        "",
        rule="network.driver",
    )
    container = as_str(spec.get("Container"), "Container")
    cdata = await ownership.owned(ctx, container, "connect")
    spec["Container"] = str(cdata["Id"])
    if "EndpointConfig" in spec:
        from ds01.gate.policy import create

        spec["EndpointConfig"] = await create.endpoint_settings(
            ctx, spec["EndpointConfig"], "EndpointConfig."
        )
    suffix = name.split(".")[1]
    return Plan(f"/networks/{data['Id']}/{suffix}", list(ctx.req.query), body=dump(spec))


async def networks_list(ctx: Ctx, body: bytes | None) -> Plan:
    """The caller's networks and the built-in ones (the engine cannot filter "mine or
    built-in", so the gate filters the reply)."""
    plan = Plan(ctx.req.path, list(ctx.req.query))
    if ctx.is_admin:
        return plan
    me = ctx.caller.name

    def mine_or_builtin(net: dict[str, Any], owner: str | None) -> bool:
        return owner == me or (owner is None and str(net.get("Name", "")) in BUILTIN_NETWORKS)

    plan.capture_response = True
    plan.after = filters.owned_reply(
        ctx, ObjectKind.NETWORK, "Id", mine_or_builtin, first=adopt_labelled
    )
    return plan


async def prune_own(ctx: Ctx, body: bytes | None) -> Plan:
    """volumes/networks prune: only the caller's (a label filter the engine ANDs; see the
    module docstring for why a label is enough here). Containers: filters.prune_containers."""
    if ctx.req.name == "containers.prune":
        return await filters.prune_containers(ctx, body)
    query = list(ctx.req.query)
    if not ctx.is_admin:
        query = filters.with_owner(ctx, query)
    plan = Plan(ctx.req.path, query)
    if ctx.req.name == "volumes.prune":

        async def after(status: int, reply: bytes | None) -> bytes | None:
            gone = json.loads(reply).get("VolumesDeleted") if status == 200 and reply else None
            for name in gone if isinstance(gone, list) else []:
                await ctx.run(ctx.deps.containers.owners.forget, ObjectKind.VOLUME, str(name))
            return None

        plan.capture_response = True
        plan.after = after
    return plan
