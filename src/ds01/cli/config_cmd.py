"""`ds01 config check` and `ds01 config show`: validate the config file, explain one user's limits.

Thin: reads flags, calls ds01.config, renders. `check` prints every problem as
`file:line:col: key.path: message` (one per line, on stderr, editor-clickable) and exits 2;
`show` lets ConfigError travel to the single error path in cli/main.py. Works offline (no
daemon): it reads the file the daemon would read.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ds01.cli.context import globals_of
from ds01.cli.text import shown
from ds01.errors import EXIT_USAGE, ConfigError, NotFound
from ds01.identity import caller_of_name
from ds01.model.gpueq import GpuEq

if TYPE_CHECKING:
    from ds01.config import Config, ResolvedLimits

app = typer.Typer(
    help="Check the config file and show the limits it gives a user.", no_args_is_help=True
)


@app.command("check")
def check(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Config file to check [default: --config, DS01_CONFIG, /etc/ds01/ds01.yaml]."
        ),
    ] = None,
) -> None:
    """Validate a config file: exit 0 when valid, else list every problem and exit 2."""
    target = path if path is not None else globals_of(ctx).paths().config
    try:
        from ds01.config import load_config

        config = load_config(target)
    except ConfigError as err:
        for line in err.lines():
            typer.echo(shown(line), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    groups, users = len(config.groups), len(config.named_users())
    typer.echo(shown(f"ok: {target} is valid ({_count(groups, 'group')}, {_count(users, 'user')})"))


@app.command("show")
def show(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", help="User to explain [default: you].")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (fields: docs/config.md).")
    ] = False,
) -> None:
    """The effective limits of one user, and which layer each value came from."""
    from ds01.config import load_config

    config = load_config(globals_of(ctx).paths().config)
    name = user if user is not None else pwd.getpwuid(os.getuid()).pw_name
    unix_groups = _unix_groups(name)
    if unix_groups is None:
        typer.echo(
            shown(
                f"note: '{name}' is unknown to NSS (getent passwd); resolved without Unix groups"
            ),
            err=True,
        )
    resolved = config.resolve(name, unix_groups or ())
    if as_json:
        from ds01.cli.output import print_json

        print_json(_as_json(config, resolved, unix_groups))
        return
    _print_table(config, resolved, unix_groups)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _unix_groups(name: str) -> frozenset[str] | None:
    """The user's Unix groups from NSS, or None when NSS does not know the user."""
    try:
        return caller_of_name(name).groups
    except NotFound:
        return None


def _machine(kind: str, value: object) -> dict[str, object]:
    if isinstance(value, GpuEq):
        return {"value": value.as_text(), "float": float(value)}
    return {"value": value}


Row = tuple[str, str, object, str | None]


def _rows(resolved: ResolvedLimits) -> list[Row]:
    """(key, kind, value, source) for every limit, the group cap and every policy key."""
    from ds01.config.schema import LIMIT_KINDS, POLICY_KINDS

    rows: list[Row] = [
        (key, kind, resolved.values[key], resolved.sources[key])
        for key, kind in LIMIT_KINDS.items()
    ]
    rows.append(
        (
            "max_gpueq_total",
            "gpueq",
            resolved.values.get("max_gpueq_total"),
            resolved.sources.get("max_gpueq_total"),
        )
    )
    for key, kind in POLICY_KINDS.items():
        full = f"policy.{key}"
        rows.append((full, kind, resolved.values[full], resolved.sources[full]))
    return rows


def _as_json(
    config: Config, resolved: ResolvedLimits, unix_groups: frozenset[str] | None
) -> dict[str, object]:
    limits: dict[str, object] = {}
    policy: dict[str, object] = {}
    for key, kind, value, source in _rows(resolved):
        entry = {**_machine(kind, value), "source": source}
        if key.startswith("policy."):
            policy[key.removeprefix("policy.")] = entry
        else:
            limits[key] = entry
    return {
        "user": resolved.user,
        "group": resolved.group,
        "group_via": resolved.group_via,
        "unix_groups": sorted(unix_groups) if unix_groups is not None else None,
        "admin": config.is_admin(resolved.user, unix_groups or ()),
        "exempt": config.is_exempt(resolved.user),
        "config": config.source,
        "limits": limits,
        "policy": policy,
    }


def _print_table(
    config: Config, resolved: ResolvedLimits, unix_groups: frozenset[str] | None
) -> None:

    from ds01.cli.output import console, human, new_table, styled

    via = {"users": "users.<name>.group", "members": "members", "unix_group": "unix_group"}
    group = resolved.group or "(none: defaults only)"
    if resolved.group_via is not None:
        group += f" (via {via[resolved.group_via]})"
    roles = [
        r
        for r, on in (
            ("admin", config.is_admin(resolved.user, unix_groups or ())),
            ("exempt", config.is_exempt(resolved.user)),
        )
        if on
    ]
    console().print(styled(f"user:   {resolved.user}"))
    console().print(styled(f"group:  {group}"))
    if roles:
        console().print(styled(f"roles:  {', '.join(roles)}"))
    console().print(styled(f"config: {config.source}"))
    table = new_table(box=None, pad_edge=False, show_edge=False)
    for column in ("key", "value", "source"):
        table.add_column(column, overflow="fold")
    for key, kind, value, source in _rows(resolved):
        if key == "max_gpueq_total" and source is None:
            continue
        table.add_row(key, human(kind, value), source or "")
    console().print(table)
