"""Volumes and networks: each belongs to the user who made it (label ds01.owner, stamped by the
gate at creation, overwriting nothing — ds01.* labels from users are refused). Others' are
refused for inspect/remove/connect; lists and prunes are narrowed to the caller's own by a label
filter the engine applies. Built-in networks (bridge, host, none) are shared and read-only.

Volume and network driver options are refused: the local driver's `type=none,o=bind,device=…`
would bind any host path into a volume, and macvlan/ipvlan attach to host interfaces.
"""

from __future__ import annotations

import json
from typing import Any

from ds01.gate.engine import seg
from ds01.gate.policy import filters
from ds01.gate.policy.context import Ctx, Plan
from ds01.gate.policy.jsonbody import (
    as_bool,
    as_str,
    as_str_map,
    canonical,
    dump,
    parse_object,
    short,
)
from ds01.gate.refusal import GateRefusal, LocalReply
from ds01.runtime.spec import LABEL_MANAGED, LABEL_OWNER, LABEL_PREFIX

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


# ---- volumes ----------------------------------------------------------------------------


async def volume_owner(ctx: Ctx, name: str) -> tuple[bool, str | None]:
    """(exists, owner label)."""
    status, data = await ctx.engine.get(f"/volumes/{seg(name)}")
    if status == 404:
        return False, None
    if status != 200 or not isinstance(data, dict):
        raise LocalReply(502, f"ds01: the engine could not look up volume {name!r} ({status})")
    owner = (data.get("Labels") or {}).get(LABEL_OWNER)
    return True, owner if isinstance(owner, str) else None


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
    status, data = await ctx.engine.request(
        "POST", "/volumes/create", {"Name": name, "Labels": owner_labels(ctx)}
    )
    if status not in (200, 201):
        msg = data.get("message") if isinstance(data, dict) else status
        raise LocalReply(status if status >= 400 else 502, f"cannot create volume {name}: {msg}")


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
    if name:
        await require_volume(ctx, name, "volume.not_owner", "reuse")
    spec["Labels"] = {**labels, **owner_labels(ctx)}
    return Plan(ctx.req.path, list(ctx.req.query), body=dump(spec))


async def volume_op(ctx: Ctx, body: bytes | None) -> Plan:
    name = ctx.req.params["id"]
    action = "remove" if ctx.req.head.method == "DELETE" else "inspect"
    exists = await require_volume(ctx, name, "volume.not_owner", action)
    if not exists:
        raise LocalReply(404, f"get {name}: no such volume")
    return Plan(ctx.req.path, list(ctx.req.query))


# ---- networks ---------------------------------------------------------------------------


async def network_info(ctx: Ctx, ref: str) -> dict[str, Any] | None:
    status, data = await ctx.engine.get(f"/networks/{seg(ref)}")
    if status == 404:
        return None
    if status != 200 or not isinstance(data, dict):
        raise LocalReply(502, f"ds01: the engine could not look up network {ref!r} ({status})")
    return data


def network_owner(data: dict[str, Any]) -> str | None:
    owner = (data.get("Labels") or {}).get(LABEL_OWNER)
    return owner if isinstance(owner, str) else None


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
    labels = as_str_map(spec.get("Labels"), "Labels")
    check_labels(labels, "network create")
    spec["Labels"] = {**labels, **owner_labels(ctx)}
    if ipam:
        spec["IPAM"] = ipam
    return Plan(ctx.req.path, list(ctx.req.query), body=dump(spec))


async def network_op(ctx: Ctx, body: bytes | None) -> Plan:
    from ds01.gate.policy import ownership

    ref = ctx.req.params["id"]
    name = ctx.req.name
    if name == "network.inspect":
        data = await require_network(ctx, ref, "inspect", builtin_ok=True)
        return Plan(f"/networks/{data['Id']}", list(ctx.req.query))
    if name == "network.remove":
        data = await require_network(ctx, ref, "remove", builtin_ok=False)
        return Plan(f"/networks/{data['Id']}", list(ctx.req.query))
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

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status != 200 or reply is None:
            return None
        items = json.loads(reply)
        if not isinstance(items, list):
            return None
        keep = [
            n for n in items if isinstance(n, dict) and (network_owner(n) == me or is_builtin(n))
        ]
        return json.dumps(keep).encode()

    plan.capture_response = True
    plan.after = after
    return plan


async def prune_own(ctx: Ctx, body: bytes | None) -> Plan:
    """containers/volumes/networks prune: only the caller's (a label filter the engine ANDs)."""
    query = list(ctx.req.query)
    if not ctx.is_admin:
        query = filters.with_owner(ctx, query)
    return Plan(ctx.req.path, query)
