"""Narrow lists, events and prunes to the caller's own objects (admins: everything).

Container and volume lists: the engine's reply is read whole and filtered by the owner records
(services/owners.py), so a container whose ds01.owner label names the caller (a legacy build
step of an image with `LABEL ds01.owner=<caller>`) is not listed, and one made for the caller is
whatever its labels say. A user's container list is not fetched per request: identical list
requests that arrive together share one engine answer (gate/flights.py: never one older than a
request it serves), read once into a ContainerList, whose owners are looked up once, and
narrowed and encoded once per caller (ContainerList.for_owner).

Container prunes: the engine can narrow a prune only by label, so the gate removes the caller's
stopped containers itself, one by one (prune_containers).

Events: the engine narrows the stream by the label filter `ds01.owner=<caller>` (ANDed with the
user's own), and the gate then judges each event as it passes: a container's or an image's event
goes through only if ds01's records say the container or image is the caller's (an image
`LABEL ds01.owner=<someone>` puts that label on build containers and images it did not make for
them). Volume and network labels are set by the gate alone and need no second look.

The `filters` parameter is parsed strictly (one parameter, a JSON object of lists or of
{value: true} maps, each key once) and re-encoded in the map form every API version reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ds01.gate.engine import query_json, seg
from ds01.gate.httpio import Headers, ResponseHead
from ds01.gate.policy.context import After, Ctx, GateDeps, Plan
from ds01.gate.policy.jsonbody import parse_object
from ds01.gate.refusal import GateRefusal, LocalReply
from ds01.runtime.spec import LABEL_OWNER
from ds01.services.owners import ObjectKind


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
    if ctx.is_admin:
        return Plan(ctx.req.path, query)
    if ctx.req.name == "events":
        plan = Plan(ctx.req.path, with_owner(ctx, query))
        plan.line_filter = _own_event(ctx)
        return plan
    parse(query)  # the engine reads the user's filters: refuse what it could read otherwise
    plan = Plan(ctx.req.path, query)
    if ctx.req.name == "containers.list":
        # Answered from a shared flight (server.py), narrowed to the caller's own there; the
        # hook below stays set all the same, so that no way of forwarding it is unnarrowed.
        plan.shared_list_owner = ctx.caller.name
    plan.capture_response = True
    plan.after = _list_filter(ctx)
    return plan


def _list_filter(ctx: Ctx) -> After:
    """The hook that keeps, of the engine's container or volume list, what the caller owns."""
    me = ctx.caller.name

    def mine(_item: dict[str, Any], owner: str | None) -> bool:
        return owner == me

    if ctx.req.name == "volumes.list":
        from ds01.gate.policy import volumes_networks as vn

        return owned_reply(
            ctx, ObjectKind.VOLUME, "Name", mine, envelope="Volumes", first=vn.adopt_labelled
        )
    return owned_reply(ctx, ObjectKind.CONTAINER, "Id", mine)


Keep = Callable[[dict[str, Any], str | None], bool]


def owned_reply(
    ctx: Ctx,
    kind: ObjectKind,
    key: str,
    keep: Keep,
    *,
    envelope: str | None = None,
    first: Callable[[Ctx], Awaitable[None]] | None = None,
) -> After:
    """The one hook that narrows an engine list reply by ds01's owner records: each item (a
    JSON object, its record looked up by item[key]) stays when keep(item, recorded owner)
    says so. envelope: the list sits in that field of an object (volumes). first: what must
    happen before the records are read (adopting labelled volumes and networks)."""

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status != 200 or reply is None:
            return None
        data = json.loads(reply)
        items = data.get(envelope) if envelope and isinstance(data, dict) else data
        if not isinstance(items, list):
            return (
                None
                if envelope is None or items is None
                else json.dumps({**data, envelope: []}).encode()
            )
        if first is not None:
            await first(ctx)
        objects = [i for i in items if isinstance(i, dict)]
        keys = [str(i.get(key, "")) for i in objects]
        owners = await ctx.run(ctx.deps.containers.owners.owners, kind, keys)
        kept = [i for i in objects if keep(i, owners.get(str(i.get(key, ""))))]
        return json.dumps({**data, envelope: kept} if envelope else kept).encode()

    return after


class ContainerList:
    """One engine answer to GET /containers/json, shared by the requests of one flight.

    Built once per flight: the JSON read once, each container's recorded owner looked up once
    (after the engine answered, so a container created before any of the requests has its
    record), each container encoded once. `for_owner` is the only way out: the reply one caller
    may see, narrowed by the owner records exactly as owned_reply narrows (the same bytes as
    json.dumps of the kept items). An answer that is not a 200 is passed on as the engine sent
    it (an error about the request's filters reads the same for everyone); a 200 that is not a
    JSON list is refused for everyone (502, fetch_container_list)."""

    def __init__(
        self, rhead: ResponseHead, body: bytes, items: list[Any] | None, owners: dict[str, str]
    ) -> None:
        """items: the engine's JSON list (None: pass `body` on as it is); owners: id → owner."""
        self.status = rhead.status
        h = Headers(list(rhead.headers.items))
        h.remove("Content-Length", "Transfer-Encoding", "Connection")
        self._head = rhead.raw.split(b"\r\n", 1)[0] + b"\r\n" + h.encode()
        self._raw = body
        self._items = (
            None
            if items is None
            else [
                (owners.get(str(i.get("Id", ""))), json.dumps(i).encode())
                for i in items
                if isinstance(i, dict)
            ]
        )
        self._by_owner: dict[str, bytes] = {}

    def for_owner(self, name: str) -> bytes:
        """The whole HTTP answer (head and body) for `name`, a non-admin caller."""
        out = self._by_owner.get(name)
        if out is None:
            if self._items is None:
                body = self._raw
            else:
                body = b"[" + b", ".join(enc for owner, enc in self._items if owner == name) + b"]"
            out = self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body
            if len(self._by_owner) < 4096:
                self._by_owner[name] = out
        return out


async def fetch_container_list(deps: GateDeps, target: str) -> ContainerList:
    """One flight's engine answer to `GET target` (a container list), read into a ContainerList.
    The request is the gate's own (no header of any caller's), so the answer depends on the
    target alone — which is what the flight is keyed by."""
    rhead, body = await deps.engine.exchange("GET", target)
    items: list[Any] | None = None
    owners: dict[str, str] = {}
    if rhead.status == 200:
        try:
            data = json.loads(body)
        except ValueError:
            raise LocalReply(502, "ds01: the engine's container list could not be read") from None
        if data is None:
            data = []  # Go's encoding of an empty (nil) list
        if not isinstance(data, list):
            # Fail closed: what else it might hold is nobody's to see.
            raise LocalReply(502, "ds01: the engine's container list could not be read")
        items = data
        keys = [str(i.get("Id", "")) for i in data if isinstance(i, dict)]
        if keys:
            owners = await asyncio.to_thread(
                deps.containers.owners.owners, ObjectKind.CONTAINER, keys
            )
    return ContainerList(rhead, body, items, owners)


RECORD_GRACE_S = 0.5


def _own_event(ctx: Ctx) -> Callable[[bytes], Awaitable[bool]]:
    """Whether one event (a JSON line) is about the caller's own container or image."""
    book, me = ctx.deps.containers.owners, ctx.caller.name
    known: dict[tuple[ObjectKind, str], bool] = {}  # the caller's own, seen before

    async def keep(line: bytes) -> bool:
        try:
            event = json.loads(line)
        except ValueError:
            return False
        if not isinstance(event, dict):
            return False
        kind = {"container": ObjectKind.CONTAINER, "image": ObjectKind.IMAGE}.get(
            str(event.get("Type") or "")
        )
        if kind is None:
            return True  # volumes, networks: their labels are the gate's own
        actor = event.get("Actor") if isinstance(event.get("Actor"), dict) else {}
        key = str((actor or {}).get("ID") or event.get("id") or "")
        if (kind, key) in known:
            return True
        owner = await ctx.run(book.owner, kind, key)
        if owner is None:
            # The engine reports a create before the gate has recorded its owner: look once
            # more a moment later (a forged label stays unrecorded).
            await asyncio.sleep(RECORD_GRACE_S)
            owner = await ctx.run(book.owner, kind, key)
        if owner != me:
            return False
        if len(known) > 4096:
            known.clear()
        known[(kind, key)] = True
        return True

    return keep


# ---- container prune ------------------------------------------------------------------

PRUNE_FILTERS = frozenset({"label", "label!"})
# A prune the engine runs to answer in its own format while removing nothing: containers made
# before 1970-01-01T00:00:01.
PRUNE_NOTHING = json.dumps({"until": {"1": True}}, separators=(",", ":"))


async def prune_containers(ctx: Ctx, body: bytes | None) -> Plan:
    """POST /containers/prune. The engine narrows a prune only by label, and a container's
    labels are forgeable (a legacy build step runs in a container with its image's labels), so
    for a non-admin the gate removes the caller's stopped containers itself, one by one (the
    same removal as `docker rm`, which fails on a container started meanwhile), and answers
    with the engine's reply to a prune that matches nothing, listing what it removed.
    SpaceReclaimed is not measured (0)."""
    if ctx.is_admin:
        return Plan(ctx.req.path, list(ctx.req.query))
    wanted = parse(ctx.req.query)
    if set(wanted) - PRUNE_FILTERS:
        raise GateRefusal(
            "request.query",
            f"docker container prune --filter {', '.join(sorted(set(wanted) - PRUNE_FILTERS))} "
            "is not supported by the gate (only label filters); remove containers with "
            "docker rm $(docker ps -aq -f status=exited)",
        )
    rest = [(k, v) for k, v in ctx.req.query if k != "filters"]
    plan = Plan(ctx.req.path, [*rest, ("filters", PRUNE_NOTHING)])

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status != 200:
            return None
        removed = await _remove_stopped(ctx, wanted)
        return json.dumps({"ContainersDeleted": removed or None, "SpaceReclaimed": 0}).encode()

    plan.capture_response = True
    plan.after = after
    return plan


def _labels_match(labels: dict[str, str], wanted: dict[str, dict[str, bool]]) -> bool:
    """The engine's label / label! prune filters: `key` or `key=value`."""

    def has(spec: str) -> bool:
        key, eq, value = spec.partition("=")
        return key in labels and (not eq or labels[key] == value)

    return all(has(s) for s in wanted.get("label", {})) and not any(
        has(s) for s in wanted.get("label!", {})
    )


async def _remove_stopped(ctx: Ctx, wanted: dict[str, dict[str, bool]]) -> list[str]:
    stopped = query_json({"status": ["created", "exited", "dead"]})
    status, items = await ctx.engine.get(f"/containers/json?all=1&filters={stopped}")
    if status != 200 or not isinstance(items, list):
        return []
    ids = [str(c.get("Id", "")) for c in items if isinstance(c, dict)]
    owners = await ctx.run(ctx.deps.containers.owners.owners, ObjectKind.CONTAINER, ids)
    removed = []
    for c in items:
        cid = str(c.get("Id", ""))
        if owners.get(cid) != ctx.caller.name or not _labels_match(c.get("Labels") or {}, wanted):
            continue
        status, _ = await ctx.engine.request("DELETE", f"/containers/{seg(cid)}")
        if status != 204:
            continue  # started (or removed) meanwhile
        removed.append(cid)
        ctx.deps.inspected.pop(cid, None)
        row = await ctx.run(ctx.deps.allocations.live_for_container_id, cid)
        if row is not None:
            await ctx.run(ctx.deps.allocations.release_by_daemon, row.id, "container_removed")
        await ctx.run(ctx.deps.containers.owners.forget, ObjectKind.CONTAINER, cid)
    return removed
