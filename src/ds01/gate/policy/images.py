"""Images, tags and builds: who may name, move and remove a tag, whose images are private, and
what a build may reach.

Tags (owner records, kind `tag`, key = the normalised `domain/path:tag`): a user may create a tag
that does not exist in the engine, and move or remove only tags recorded as theirs. An existing
tag without a record is shared (made by an admin, pulled or built before ds01 recorded tags):
read-only for users. Every way to write a tag is checked before it is forwarded — `docker tag`,
`build -t`, `commit REPO:TAG`, `import - REPO:TAG`, `pull` — and recorded after it succeeded.
`docker load` names its tags inside the archive: the gate snapshots the engine's tags, lets the
load run, then puts back every tag the caller did not own and refuses (the rest stays loaded).

Images (owner records, kind `image`, key = `sha256:` ID): what a user builds (with the build's
intermediate images), commits, imports or loads is private to them — others may not inspect,
read the history of, save, push, tag from or run it. Images without a record (pulled, made
before ds01 recorded images, made by admins) are shared; an admin shares a user's image by
tagging it through the gate. Only IDs the engine did not have before an operation are recorded,
so nobody can claim a shared image by rebuilding or loading it.

Builds: the legacy builder only (BuildKit's /session and /grpc speak HTTP/2 inside the hijacked
connection, which the gate cannot read, so non-admins are refused them; `_ping` tells clients
"Builder-Version: 1"). Build steps run under the caller's cgroup with the caller's limits, on
the default network, their own network or one of their containers' — never the host's or
another user's. Imports and builds from URLs are refused (the engine would fetch them as root,
from inside the host's network); pruning all unused images (not just dangling ones) is for
admins.
"""

from __future__ import annotations

import json
import pwd
import re
from collections.abc import Iterable
from typing import Any

from ds01.gate.engine import query_json, seg
from ds01.gate.policy import buildcontext, filters, ownership
from ds01.gate.policy import limits as limits_rules
from ds01.gate.policy import volumes_networks as vn
from ds01.gate.policy.context import Ctx, Plan, passthrough
from ds01.gate.policy.jsonbody import parse_object
from ds01.gate.refusal import GateRefusal, LocalReply
from ds01.identity import sanitize_username
from ds01.images import recipe
from ds01.images.recipe import OWNER_FIELD
from ds01.runtime import stamp
from ds01.runtime.spec import LABEL_OWNER, cgroup_parent
from ds01.runtime.stamp import DEFAULT_CPU_PERIOD
from ds01.services.hostpaths import host_fitted
from ds01.services.owners import ObjectKind, OwnerBook

# BuildKit's marker for "the context comes over the session", not a URL.
_CLIENT_SESSION = "client-session"
_HEX_ID = re.compile(r"(sha256:)?[0-9a-f]{64}")
_FULL_ID = re.compile(r"sha256:[0-9a-f]{64}")
# The legacy builder's last word: {"aux":{"ID":"sha256:…"}}. What build steps print arrives
# JSON-escaped inside "stream" strings, so it cannot take this shape.
_AUX_ID = re.compile(rb'\{"aux":\{"ID":"(sha256:[0-9a-f]{64})"\}\}')
_IMPORT_ID = re.compile(rb'\{"status":"(sha256:[0-9a-f]{64})"')
_LOADED_ID = re.compile(rb"Loaded image ID: (sha256:[0-9a-f]{64})")
_INT = re.compile(r"-?[0-9]{1,19}")
# Build query parameter → the HostConfig key the limit rules read.
_BUILD_LIMITS = {
    "memory": "Memory",
    "memswap": "MemorySwap",
    "cpuquota": "CpuQuota",
    "cpuperiod": "CpuPeriod",
    "shmsize": "ShmSize",
}


# ---- names ------------------------------------------------------------------------------


def normalise_tag(ref: str, tag: str = "") -> str | None:
    """The tag `ref` (with `tag` replacing its own, as the engine's tag/import/pull parameters
    do) in its full form: 'labshared' → 'docker.io/library/labshared:latest'. None when it
    names no tag: an image ID, a digest reference, an empty name."""
    if "@" in ref or _HEX_ID.fullmatch(ref) or tag.startswith("sha256:"):
        return None
    name, own_tag = ref, ""
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        name, own_tag = ref[:colon], ref[colon + 1 :]
    tag = tag or own_tag or "latest"
    if not name:
        return None
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}:{tag}"


def familiar(key: str) -> str:
    """A normalised tag as the docker CLI shows it: 'docker.io/library/x:1' → 'x:1'."""
    return key.removeprefix("docker.io/").removeprefix("library/")


def _is_id_ref(image_id: str, ref: str) -> bool:
    """Whether the engine reads `ref` as (a prefix of) the image's ID rather than as a name."""
    return image_id.startswith(ref) or image_id.partition(":")[2].startswith(ref)


# ---- what the engine and the records say ------------------------------------------------


def _book(ctx: Ctx) -> OwnerBook:
    return ctx.deps.containers.owners


async def image_data(ctx: Ctx, ref: str) -> dict[str, Any] | None:
    """The engine's inspect data of the image `ref` names; None when there is none."""
    status, data = await ctx.engine.get(f"/images/{seg(ref)}/json")
    if status >= 500:
        raise LocalReply(502, f"ds01: the engine could not look up image {ref!r} ({status})")
    return data if status == 200 and isinstance(data, dict) else None


async def _images(ctx: Ctx, *, all_layers: bool) -> list[dict[str, Any]]:
    status, data = await ctx.engine.get("/images/json" + ("?all=1" if all_layers else ""))
    if status != 200 or not isinstance(data, list):
        raise LocalReply(502, f"ds01: the engine could not list images ({status})")
    return [i for i in data if isinstance(i, dict)]


async def engine_tags(ctx: Ctx) -> dict[str, str]:
    """Every tag in the engine (normalised) → the ID of the image it names."""
    out: dict[str, str] = {}
    for image in await _images(ctx, all_layers=False):
        for name in image.get("RepoTags") or []:
            key = normalise_tag(str(name)) if name != "<none>:<none>" else None
            if key is not None:
                out[key] = str(image.get("Id", ""))
    return out


async def engine_ids(ctx: Ctx) -> set[str]:
    return {str(i.get("Id", "")) for i in await _images(ctx, all_layers=True)}


async def _ancestors(ctx: Ctx, image_id: str) -> list[str]:
    """The image and the local images it was built on (a build's intermediate images)."""
    status, data = await ctx.engine.get(f"/images/{seg(image_id)}/history")
    found = [image_id]
    if status == 200 and isinstance(data, list):
        found += [str(h.get("Id")) for h in data if isinstance(h, dict)]
    return [i for i in dict.fromkeys(found) if _FULL_ID.fullmatch(i)]


async def record_images(ctx: Ctx, ids: Iterable[str], before: set[str], origin: str) -> None:
    """Make the images an operation created the caller's (admins' stay shared). IDs the engine
    had before are left alone: rebuilding or loading a shared image does not make it yours."""
    if ctx.is_admin:
        return
    for image_id in dict.fromkeys(ids):
        if image_id not in before:
            await ctx.run(
                _book(ctx).record, ObjectKind.IMAGE, image_id, ctx.caller.name, origin=origin
            )


async def record_tags(ctx: Ctx, keys: Iterable[str], origin: str) -> None:
    """The caller's tags now; an admin's tags are shared (no record)."""
    book = _book(ctx)
    for key in dict.fromkeys(keys):
        if ctx.is_admin:
            await ctx.run(book.forget, ObjectKind.TAG, key)
        else:
            await ctx.run(book.record, ObjectKind.TAG, key, ctx.caller.name, origin=origin)


# ---- private images ---------------------------------------------------------------------


async def usable_image(ctx: Ctx, ref: str, action: str) -> dict[str, Any] | None:
    """The image `ref` names, refused (image.not_owner) when it is another user's private
    image; None when there is no such image (the engine answers that itself)."""
    data = await image_data(ctx, ref)
    if data is None or ctx.is_admin:
        return data
    image_id = str(data.get("Id", ""))
    if await ctx.run(_book(ctx).private_image_of_another, image_id, ctx.caller.name):
        raise GateRefusal(
            "image.not_owner",
            f"you may not {action} image {ref!r}: it is another user's private image",
            summary=f"{ctx.req.endpoint} on image {image_id[:19]}",
        )
    return data


async def inspect(ctx: Ctx, body: bytes | None) -> Plan:
    """GET /images/{name}/json and /history: forwarded with the checked image's ID, so a tag
    moved in between cannot redirect it."""
    name = ctx.req.params["name"]
    action = "inspect" if ctx.req.name == "image.inspect" else "read the history of"
    data = await usable_image(ctx, name, action)
    if data is None:
        return passthrough(ctx)
    suffix = ctx.req.path.rsplit("/", 1)[1]
    return Plan(f"/images/{data['Id']}/{suffix}", list(ctx.req.query))


async def export(ctx: Ctx, body: bytes | None) -> Plan:
    """docker save (one image or several) and docker push: only images the caller may use."""
    names = [ctx.req.params["name"]] if "name" in ctx.req.params else ctx.req.query_all("names")
    action = "push" if ctx.req.name == "image.push" else "save"
    for name in names:
        await usable_image(ctx, name, action)
    return passthrough(ctx)


async def listing(ctx: Ctx, body: bytes | None) -> Plan:
    """GET /images/json: the caller's images and the shared ones (the engine cannot filter
    by ds01's records, so the gate filters the reply); admins see all. Each image says whose
    it is (OWNER_FIELD)."""
    plan = passthrough(ctx)
    me, admin = ctx.caller.name, ctx.is_admin

    def mine_or_shared(image: dict[str, Any], owner: str | None) -> bool:
        image[OWNER_FIELD] = owner or ""
        return admin or owner is None or owner == me

    plan.capture_response = True
    plan.after = filters.owned_reply(ctx, ObjectKind.IMAGE, "Id", mine_or_shared)
    return plan


# ---- tags -------------------------------------------------------------------------------


async def require_tag_writable(
    ctx: Ctx, key: str | None, action: str, *, fix: str | None = None, pull: bool = False
) -> None:
    """Refuse (image.tag_not_owner) writing the tag `key` unless it is new or the caller's —
    or, for a pull, a tag someone else also pulled: the name then means the registry's image
    either way, and nobody's local build is replaced."""
    if key is None or ctx.is_admin:
        return
    await require_own_namespace(ctx, key, action)
    tags = await engine_tags(ctx)
    if key not in tags:
        return
    book = _book(ctx)
    owner = await ctx.run(book.owner, ObjectKind.TAG, key)
    if owner == ctx.caller.name:
        return
    if pull and owner is not None and await ctx.run(book.origin, ObjectKind.TAG, key) == "pull":
        return
    whose = "another user's" if owner is not None else "shared (read-only)"
    raise GateRefusal(
        "image.tag_not_owner",
        f"{action} {familiar(key)!r} was refused: that tag exists and is {whose}",
        fix=fix,
        summary=f"{action} {key} (owner {owner or 'none'})",
    )


async def foreign_namespace(ctx: Ctx, key: str) -> bool:
    """Whether the tag `key` lies in another user's `ds01-<user>/` namespace, where `ds01
    image` and `ds01 project launch` look for that user's images: a tag put there by someone
    else would have them build on, or run, an image of that someone's choosing."""
    path = key.removeprefix("docker.io/")
    if path == key:
        return False  # another registry's name
    part = recipe.namespace_owner(path)
    if part is None or part == sanitize_username(ctx.caller.name):
        return False
    return recipe.is_hashed(part) or await ctx.run(_account_exists, part)


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def require_own_namespace(ctx: Ctx, key: str, action: str) -> None:
    if not ctx.is_admin and await foreign_namespace(ctx, key):
        mine = recipe.namespace(ctx.caller.name)
        raise GateRefusal(
            "image.tag_not_owner",
            f"{action} {familiar(key)!r} was refused: {familiar(key).split('/')[0]}/ holds "
            "another user's ds01 images",
            fix=f"Use a name of your own; your ds01 images are {mine}NAME (ds01 image build).",
            summary=f"{action} {key} (another user's namespace)",
        )


async def tag(ctx: Ctx, body: bytes | None) -> Plan:
    """POST /images/{name}/tag?repo=&tag=: from an image the caller may use, to a tag that is
    new or theirs. An admin's tag shares the image."""
    data = await usable_image(ctx, ctx.req.params["name"], "tag")
    repo, new_tag = ctx.req.query_first("repo") or "", ctx.req.query_first("tag") or ""
    key = normalise_tag(repo, new_tag) if repo else None
    await require_tag_writable(ctx, key, "docker tag to")
    if data is None:
        return passthrough(ctx)
    image_id = str(data["Id"])
    plan = Plan(f"/images/{image_id}/tag", list(ctx.req.query))

    async def after(status: int, _reply: bytes | None) -> bytes | None:
        if status == 201 and key is not None:
            await record_tags(ctx, [key], "tag")
            if ctx.is_admin:
                await ctx.run(_book(ctx).forget, ObjectKind.IMAGE, image_id)
        return None

    plan.after = after
    return plan


async def remove(ctx: Ctx, body: bytes | None) -> Plan:
    """DELETE /images/{name}: untagging needs the tag to be the caller's; removing by ID (or
    digest) needs the image and every tag on it to be; never an image another user's
    container runs on. The records of what went are forgotten."""
    name = ctx.req.params["name"]
    image = await image_data(ctx, name)
    plan = passthrough(ctx)
    plan.capture_response = True
    plan.after = _forget_removed(ctx)
    if image is None or ctx.is_admin:
        return plan  # the engine answers "no such image" itself
    image_id = str(image.get("Id", ""))
    await _require_unused(ctx, name, image_id)
    book = _book(ctx)
    if "@" in name or _is_id_ref(image_id, name):
        keys = [k for t in image.get("RepoTags") or [] if (k := normalise_tag(str(t)))]
        owners = await ctx.run(book.owners, ObjectKind.TAG, keys)
        theirs = sorted(k for k in keys if owners.get(k) != ctx.caller.name)
        if theirs:
            raise GateRefusal(
                "image.tag_not_owner",
                f"removing image {name!r} was refused: its tags "
                f"{', '.join(map(familiar, theirs))} are not yours",
                summary=f"rmi {image_id[:19]} tags {theirs}",
            )
        await usable_image(ctx, name, "remove")
        return plan
    key = normalise_tag(name)
    if key is not None and await ctx.run(book.owner, ObjectKind.TAG, key) != ctx.caller.name:
        raise GateRefusal(
            "image.tag_not_owner",
            f"removing tag {name!r} was refused: it is not yours",
            summary=f"rmi {key}",
        )
    await usable_image(ctx, name, "remove")  # its last tag would take the image with it
    return plan


async def _require_unused(ctx: Ctx, name: str, image_id: str) -> None:
    _status, containers = await ctx.engine.get(
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


def _forget_removed(ctx: Ctx) -> Any:
    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status != 200 or not reply:
            return None
        items = json.loads(reply)
        book = _book(ctx)
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            key = normalise_tag(str(item.get("Untagged", ""))) if item.get("Untagged") else None
            if key is not None:
                await ctx.run(book.forget, ObjectKind.TAG, key)
            if item.get("Deleted"):
                await ctx.run(book.forget, ObjectKind.IMAGE, str(item["Deleted"]))
        return None

    return after


# ---- pull, import, commit, load ---------------------------------------------------------


async def create(ctx: Ctx, body: bytes | None) -> Plan:
    """POST /images/create: pull (fromImage) or import from the request body (fromSrc=-)."""
    src = ctx.req.query_all("fromSrc")
    if any(s not in ("", "-") for s in src):
        raise GateRefusal(
            "image.import_url",
            f"importing an image from {src[0]!r} was refused",
            summary=f"fromSrc={src[0]}",
        )
    if ctx.req.query_first("fromSrc") == "-":
        return await _import(ctx)
    return await _pull(ctx)


async def _pull(ctx: Ctx) -> Plan:
    image = ctx.req.query_first("fromImage") or ""
    new_tag = ctx.req.query_first("tag") or ""
    plan = passthrough(ctx)
    if not image:
        return plan
    # No tag at all (docker pull -a): the engine pulls every tag of the repository.
    name_only = "@" not in image and not new_tag and ":" not in image.rsplit("/", 1)[-1]
    fix = (
        "A pull under a name that exists would replace it, so it can only be pulled by its "
        "owner: ask them (or an admin for a shared tag), or pull by digest: docker pull "
        "NAME@sha256:…"
    )
    if name_only:
        repo = (normalise_tag(image) or "").rsplit(":", 1)[0]
        for old in sorted(k for k in await engine_tags(ctx) if k.rsplit(":", 1)[0] == repo):
            await require_tag_writable(ctx, old, "docker pull onto", fix=fix, pull=True)
        keys: list[str] = []
    else:
        key = normalise_tag(image, new_tag)
        await require_tag_writable(ctx, key, "docker pull onto", fix=fix, pull=True)
        keys = [key] if key is not None else []
    if keys:
        plan.finished = _record_existing(ctx, keys, "pull")
    return plan


def _record_existing(ctx: Ctx, keys: list[str], origin: str) -> Any:
    async def finished(status: int) -> None:
        if status == 200:
            tags = await engine_tags(ctx)
            await record_tags(ctx, [k for k in keys if k in tags], origin)

    return finished


async def _import(ctx: Ctx) -> Plan:
    repo, new_tag = ctx.req.query_first("repo") or "", ctx.req.query_first("tag") or ""
    key = normalise_tag(repo, new_tag) if repo else None
    await require_tag_writable(ctx, key, "docker import to")
    before = await engine_ids(ctx)
    plan = passthrough(ctx)
    plan.capture_response = True

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status == 200 and reply:
            await record_images(ctx, _IMPORT_ID.findall(reply)[-1:], before, "import")
            if key is not None and key in await engine_tags(ctx):
                await record_tags(ctx, [key], "import")
        return None

    plan.after = after
    return plan


async def commit(ctx: Ctx, body: bytes | None) -> Plan:
    """POST /commit: the caller's container (ownership.commit), to a tag that is new or
    theirs; the image is the caller's."""
    plan = await ownership.commit(ctx, body)
    repo, new_tag = ctx.req.query_first("repo") or "", ctx.req.query_first("tag") or ""
    key = normalise_tag(repo, new_tag) if repo else None
    await require_tag_writable(ctx, key, "docker commit to")
    before = await engine_ids(ctx)
    plan.capture_response = True

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status == 201 and reply:
            data = json.loads(reply)
            image_id = str(data.get("Id", "")) if isinstance(data, dict) else ""
            made = [image_id] if _FULL_ID.fullmatch(image_id) else []
            await record_images(ctx, made, before, "commit")
            if key is not None:
                await record_tags(ctx, [key], "commit")
        return None

    plan.after = after
    return plan


async def load(ctx: Ctx, body: bytes | None) -> Plan:
    """POST /images/load: the archive names its tags, so they are judged after the load: a tag
    that existed and was not the caller's is put back on its old image and the request is
    answered as refused; new tags and images become the caller's."""
    plan = passthrough(ctx)
    if ctx.is_admin:
        return plan
    tags_before, ids_before = await engine_tags(ctx), await engine_ids(ctx)
    plan.capture_response = True

    async def after(status: int, reply: bytes | None) -> bytes | None:
        if status != 200:
            return None
        tags_now = await engine_tags(ctx)
        changed = {k: v for k, v in tags_now.items() if tags_before.get(k) != v}
        await record_images(
            ctx,
            [*changed.values(), *(i.decode() for i in _LOADED_ID.findall(reply or b""))],
            ids_before,
            "load",
        )
        owners = await ctx.run(_book(ctx).owners, ObjectKind.TAG, list(changed))
        foreign = {k for k in changed if await foreign_namespace(ctx, k)}
        put_back = sorted(
            k
            for k in changed
            if k in tags_before and (owners.get(k) != ctx.caller.name or k in foreign)
        )
        dropped = sorted(k for k in foreign if k not in tags_before)
        await record_tags(
            ctx, [k for k in changed if k not in put_back and k not in dropped], "load"
        )
        for key in put_back:
            await _retag(ctx, tags_before[key], key)
        for key in dropped:
            await _untag(ctx, key)
        if put_back or dropped:
            raise GateRefusal(
                "image.tag_not_owner",
                f"docker load was refused for {', '.join(map(familiar, put_back + dropped))}: "
                "those tags exist and are not yours, or lie in another user's ds01-<user>/ "
                "namespace; they were put back or removed (the rest of the archive is loaded)",
                summary=f"load onto {put_back + dropped}",
            )
        return None

    plan.after = after
    return plan


async def _untag(ctx: Ctx, key: str) -> None:
    status, _reply = await ctx.engine.request("DELETE", f"/images/{seg(key)}?noprune=1")
    if status != 200:
        raise LocalReply(502, f"ds01: could not remove tag {key} ({status})")


async def _retag(ctx: Ctx, image_id: str, key: str) -> None:
    repo, _, name_tag = key.rpartition(":")
    status, _reply = await ctx.engine.request(
        "POST", f"/images/{seg(image_id)}/tag?repo={seg(repo)}&tag={seg(name_tag)}"
    )
    if status != 201:
        raise LocalReply(502, f"ds01: could not put tag {key} back ({status})")


# ---- builds -----------------------------------------------------------------------------


async def buildkit(ctx: Ctx, body: bytes | None) -> Plan:
    """POST /session and /grpc: BuildKit's HTTP/2 protocols, which the gate cannot read."""
    if not ctx.is_admin:
        raise GateRefusal(
            "build.buildkit",
            f"BuildKit ({ctx.req.endpoint}) was refused",
            summary=ctx.req.endpoint,
        )
    return passthrough(ctx)


async def ping(ctx: Ctx, body: bytes | None) -> Plan:
    """GET/HEAD /_ping: tell non-admins' clients to build with the legacy builder (the docker
    20.10 CLI and compose pick BuildKit when the engine says Builder-Version: 2)."""
    plan = passthrough(ctx)
    if not ctx.is_admin:
        plan.response_headers["Builder-Version"] = "1"
    return plan


async def build(ctx: Ctx, body: bytes | None) -> Plan:
    query = list(ctx.req.query)
    for value in ctx.req.query_all("cgroupparent"):
        if value:
            _refuse_build_option(ctx, "cgroupparent", value)
    for value in ctx.req.query_all("remote"):
        if value and value != _CLIENT_SESSION:
            raise GateRefusal(
                "image.import_url",
                f"building from the remote context {value!r} was refused",
                fix="Clone or download it yourself, then build from the local directory.",
                summary=f"build remote={value}",
            )
    for value in ctx.req.query_all("labels"):
        if value.strip():
            labels = parse_object(value.encode(), "the build's labels")
            vn.check_labels({str(k): str(v) for k, v in labels.items()}, "docker build")
    if not ctx.is_admin:
        if any(v == "2" for v in ctx.req.query_all("version")):
            raise GateRefusal(
                "build.buildkit", "BuildKit (docker build with version=2) was refused"
            )
        for value in ctx.req.query_all("pull"):
            # The engine's httputils.BoolValue: these are false (the Python SDK sends "False").
            if value.strip().lower() not in ("", "0", "no", "false", "none"):
                _refuse_build_option(ctx, "pull", value)
        query = await _build_network(ctx, query)
        query = await _build_resources(ctx, query)
        for ref in _cache_from(ctx):
            await usable_image(ctx, ref, "build with the cache of")
    tags = [normalise_tag(t) for t in ctx.req.query_all("t") if t]
    for key in tags:
        await require_tag_writable(ctx, key, "docker build -t")
    plan = Plan(ctx.req.path, query)
    if not ctx.is_admin:
        _watch_build(ctx, plan, [k for k in tags if k is not None], await engine_ids(ctx))
        plan.body_check = BuildCheck(ctx)
    return plan


class BuildCheck:
    """The images a legacy build's Dockerfile builds on must be usable by the caller (not another
    user's private image), judged from the context as it streams past (buildcontext.py)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.reader = buildcontext.ContextReader(ctx.req.query_first("dockerfile") or "")
        raw = ctx.req.query_first("buildargs") or ""
        args = parse_object(raw.encode(), "the build's buildargs") if raw.strip() else {}
        self.buildargs = {str(k): None if v is None else str(v) for k, v in args.items()}

    def feed(self, data: bytes) -> None:
        self.reader.feed(data)

    async def finish(self) -> None:
        refs = buildcontext.image_refs(self.reader.dockerfile(), self.buildargs)
        seen: set[str] = set()
        while refs:
            ref = refs.pop()
            if ref in seen:
                continue
            seen.add(ref)
            data = await usable_image(self.ctx, ref, "build from")
            # A base image's ONBUILD triggers run in this build: their --from images too.
            for trigger in ((data or {}).get("Config") or {}).get("OnBuild") or []:
                refs += buildcontext.from_flags(str(trigger), [])


def _refuse_build_option(ctx: Ctx, key: str, value: str) -> None:
    raise GateRefusal(
        "build.option", f"docker build with {key}={value} was refused", summary=f"build {key}"
    )


def _cache_from(ctx: Ctx) -> list[str]:
    out: list[str] = []
    for value in ctx.req.query_all("cachefrom"):
        if value.strip():
            try:
                refs = json.loads(value)
            except ValueError:
                raise GateRefusal("request.query", "cachefrom is not a JSON list") from None
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise GateRefusal("request.query", "cachefrom is not a JSON list of names")
            out += refs
    return out


async def _build_network(ctx: Ctx, query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The network build steps run on: the default, none, or the caller's own network or
    container — forwarded by ID, so a rename in between cannot redirect it."""
    values = ctx.req.query_all("networkmode")
    chosen = values[0] if values else ""
    for value in values:
        if value.lower() == "host":
            _refuse_build_option(ctx, "networkmode", value)
    if chosen in ("", "default", "bridge", "none"):
        if any(v != chosen for v in values):
            raise GateRefusal("request.query", "networkmode was sent more than once")
        return query
    if len(values) > 1:
        raise GateRefusal("request.query", "networkmode was sent more than once")
    rest = [(k, v) for k, v in query if k != "networkmode"]
    if chosen.startswith("container:"):
        ref = chosen.removeprefix("container:")
        data = await ownership.inspect(ctx, ref)
        if ownership.owner_of(data) != ctx.caller.name:
            raise GateRefusal(
                "create.container_ref",
                f"docker build --network container:{ref} was refused: it is another user's "
                "container",
                summary=f"build networkmode={chosen}",
            )
        return [*rest, ("networkmode", f"container:{data['Id']}")]
    net = await vn.network_info(ctx, chosen)
    if net is None:
        return query  # the engine answers "network not found" itself
    if vn.network_owner(net) != ctx.caller.name and not vn.is_builtin(net):
        raise GateRefusal(
            "create.network",
            f"docker build --network {chosen} was refused: it is another user's network",
            summary=f"build networkmode={chosen}",
        )
    return [*rest, ("networkmode", str(net["Id"]))]


async def _build_resources(ctx: Ctx, query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Build steps run under the caller's cgroup, within the caller's limits: values above
    them are refused, missing ones filled in."""
    hc: dict[str, Any] = {}
    for param, key in _BUILD_LIMITS.items():
        value = ctx.req.query_first(param)
        if value:
            if not _INT.fullmatch(value):
                raise GateRefusal("request.query", f"the build parameter {param}={value!r}")
            hc[key] = int(value)
    limits = host_fitted((await ctx.run(ctx.deps.allocations.limits_for, ctx.caller)).limits)
    limits_rules.check_caps(hc, limits)
    if limits.cpus is not None and hc.get("CpuQuota", 0) <= 0:
        hc["CpuPeriod"] = hc.get("CpuPeriod") or DEFAULT_CPU_PERIOD
        hc["CpuQuota"] = round(limits.cpus * hc["CpuPeriod"])
    stamp.fill_limits(hc, limits)
    parent = cgroup_parent(ctx.caller.name, await ctx.cgroup_driver())
    out = [(k, v) for k, v in query if k not in _BUILD_LIMITS and k != "cgroupparent"]
    out += [(p, str(hc[k])) for p, k in _BUILD_LIMITS.items() if k in hc]
    return [*out, ("cgroupparent", parent)]


def _watch_build(ctx: Ctx, plan: Plan, keys: list[str], before: set[str]) -> None:
    """Once the build's stream has ended: its image (the ID the builder reports last, or the
    image its tag names) and its new intermediate images are the caller's, and so are its
    tags."""
    seen = {"tail": b"", "id": b""}

    def tap(data: bytes) -> None:
        seen["tail"] = (seen["tail"] + data)[-4096:]
        found = _AUX_ID.findall(seen["tail"])
        if found:
            seen["id"] = found[-1]

    async def finished(status: int) -> None:
        if status != 200:
            return
        tags = await engine_tags(ctx)
        final = seen["id"].decode() or next((tags[k] for k in keys if k in tags), "")
        if final:
            await record_images(ctx, await _ancestors(ctx, final), before, "build")
        await record_tags(ctx, [k for k in keys if k in tags], "build")

    plan.tap = tap
    plan.finished = finished


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
