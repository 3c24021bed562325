"""Rules that relate one part of ds01.yaml to another, beyond what each key's type says.

Owns: a user's `group` must exist; a user is a member of at most one group (listing someone in
two groups is an error, not "first wins", so nobody's quota depends on file order by accident);
no duplicates in `exempt_users`, a group's `members` or `storage.shared_paths`; `gpu.sim_machine`
is given exactly when `gpu.backend` is `sim`; and, on the built config, `memory_swap` is never
below `memory` for any group or user (Docker would refuse every container).

`raw_checks` reads the raw YAML data defensively (any part may be the wrong type — the schema
reports that), so these problems are reported together with the schema's, not one round later.
Must not raise for bad input, and must not read files.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from ds01.config.resolve import Config, resolve_layers
from ds01.config.schema import LimitsLayer
from ds01.config.yamlsource import Path, YamlDocument
from ds01.units import format_size


@dataclass(frozen=True)
class Finding:
    path: Path
    message: str
    at_key: bool = False  # point at the key rather than its value


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _items(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def raw_checks(data: object, doc: YamlDocument) -> Iterator[Finding]:
    root = _mapping(data)
    groups = _mapping(root.get("groups"))
    yield from _user_groups(_mapping(root.get("users")), list(groups))
    yield from _members(groups, doc)
    yield from _duplicates(("exempt_users",), _items(root.get("exempt_users")), doc, str)
    storage = _mapping(root.get("storage"))
    shared = _items(storage.get("shared_paths"))
    paths = [_mapping(entry).get("path") for entry in shared]
    for i, first_at in _repeats(paths, str):
        line = _line(doc, ("storage", "shared_paths", first_at, "path"), "first at line")
        yield Finding(("storage", "shared_paths", i, "path"), f"'{paths[i]}' is listed twice{line}")
    yield from _sim_backend(_mapping(root.get("gpu")))
    yield from _notify_channels(_mapping(root.get("notify")), doc)
    yield from _cluster(_mapping(root.get("cluster")), list(groups))


def _user_groups(users: dict[str, object], groups: list[str]) -> Iterator[Finding]:
    for name, spec in users.items():
        group = _mapping(spec).get("group")
        if isinstance(group, str) and group and group not in groups:
            known = ", ".join(groups) if groups else "none are defined"
            hint = did_you_mean(group, groups) or f" (groups: {known})"
            yield Finding(("users", name, "group"), f"unknown group '{group}'{hint}")


def _members(groups: dict[str, object], doc: YamlDocument) -> Iterator[Finding]:
    owner: dict[str, tuple[str, int]] = {}
    for group, spec in groups.items():
        for i, member in enumerate(_items(_mapping(spec).get("members"))):
            if not isinstance(member, str):
                continue
            if member not in owner:
                owner[member] = (group, i)
                continue
            first_group, first_i = owner[member]
            line = _line(doc, ("groups", first_group, "members", first_i))
            where = "this group" if first_group == group else f"group '{first_group}'"
            fix = "" if first_group == group else "; a user belongs to one group"
            yield Finding(
                ("groups", group, "members", i),
                f"'{member}' is already a member of {where}{line}{fix}",
            )


def _duplicates(
    path: Path, values: list[object], doc: YamlDocument, kind: type
) -> Iterator[Finding]:
    for i, first_at in _repeats(values, kind):
        line = _line(doc, (*path, first_at), "first at line")
        yield Finding((*path, i), f"'{values[i]}' is listed twice{line}")


def _repeats(values: list[object], kind: type) -> Iterator[tuple[int, int]]:
    """(index, index of its first occurrence) for each repeated value of type `kind`."""
    first: dict[object, int] = {}
    for i, value in enumerate(values):
        if not isinstance(value, kind):
            continue
        if value in first:
            yield i, first[value]
        else:
            first[value] = i


def _sim_backend(gpu: dict[str, object]) -> Iterator[Finding]:
    backend = gpu.get("backend", "nvml")
    has_machine = gpu.get("sim_machine") is not None
    if backend == "sim" and not has_machine:
        yield Finding(
            ("gpu", "backend"),
            "backend 'sim' needs gpu.sim_machine: the simulated machine file to read",
        )
    if backend == "nvml" and has_machine:
        yield Finding(
            ("gpu", "sim_machine"),
            "sim_machine is only used with 'backend: sim'; remove it or set backend: sim",
            at_key=True,
        )


def _notify_channels(notify: dict[str, object], doc: YamlDocument) -> Iterator[Finding]:
    """A chosen channel has what it needs to reach anyone; listed once."""
    channels = _items(notify.get("channels"))
    yield from _duplicates(("notify", "channels"), channels, doc, str)
    webhook = _mapping(notify.get("webhook"))
    has_url, has_file = webhook.get("url") is not None, webhook.get("url_file") is not None
    if has_url and has_file:
        yield Finding(
            ("notify", "webhook", "url_file"),
            "give the webhook's url or its url_file, not both",
            at_key=True,
        )
    if "webhook" in channels and not (has_url or has_file):
        yield Finding(
            ("notify", "channels"),
            "channel 'webhook' needs notify.webhook.url (or url_file, a root-only file holding it)",
        )
    email = _mapping(notify.get("email"))
    if "email" in channels and email.get("address") is None and not email.get("addresses"):
        yield Finding(
            ("notify", "channels"),
            "channel 'email' needs notify.email.address (a template such as"
            " '{user}@lab.example') or notify.email.addresses (user: address)",
        )


def _cluster(cluster: dict[str, object], groups: list[str]) -> Iterator[Finding]:
    """cluster.fairshare names groups that exist; the slurm backend has nodes to run on."""
    for name in _mapping(cluster.get("fairshare")):
        if name not in groups:
            known = ", ".join(groups) if groups else "none are defined"
            hint = did_you_mean(name, groups) or f" (groups: {known})"
            yield Finding(("cluster", "fairshare", name), f"unknown group '{name}'{hint}", True)
    if cluster.get("backend") == "slurm" and not _mapping(cluster.get("nodes")):
        yield Finding(
            ("cluster", "backend"),
            "backend 'slurm' needs cluster.nodes: each SLURM node and its machine file",
        )


def _line(doc: YamlDocument, path: Path, lead: str = "line") -> str:
    located = doc.positions.get(path)
    return f" ({lead} {located.value.line})" if located else ""


def swap_checks(config: Config) -> Iterator[Finding]:
    """memory_swap ≥ memory for the defaults, every group and every named user."""
    combos = [("the defaults", resolve_layers("", None, None, [("defaults", config.defaults)]))]
    for name, group in config.groups.items():
        layers: list[tuple[str, LimitsLayer]] = [("defaults", config.defaults)]
        layers.append((f"group:{name}", group))
        combos.append((f"group '{name}'", resolve_layers("", name, None, layers)))
    combos += [(f"user '{user}'", config.resolve(user)) for user in config.named_users()]
    reported: set[Path] = set()
    for who, resolved in combos:
        memory, swap = resolved.values["memory"], resolved.values["memory_swap"]
        if not isinstance(memory, int) or not isinstance(swap, int) or swap >= memory:
            continue
        path = _layer_path(resolved.sources["memory_swap"], "memory_swap")
        if path in reported:
            continue
        reported.add(path)
        yield Finding(
            path,
            f"memory_swap ({format_size(swap)}) is below memory ({format_size(memory)}, from "
            f"{resolved.sources['memory']}) for {who}; memory_swap counts memory plus swap, "
            "so set it to at least memory",
        )


def _layer_path(source: str, key: str) -> Path:
    if source == "defaults":
        return ("defaults", key)
    kind, _, name = source.partition(":")
    return ("groups" if kind == "group" else "users", name, key)
