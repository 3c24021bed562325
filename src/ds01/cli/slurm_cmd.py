"""`ds01 slurm export`: render ds01.yaml as a SLURM cluster's policy, or show what would change.

Thin: loads the config, each node's machine file and NSS's group members, builds the policy
(ds01.slurm.policy), renders the files (ds01.slurm.render) and writes them, or with --diff
compares them with the files in --out and the live accounting (ds01.slurm.diff). Works offline
except --diff, which asks the cluster through sacctmgr.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

import typer

from ds01.cli.context import globals_of
from ds01.cli.text import shown
from ds01.errors import UsageError

app = typer.Typer(
    help="Run ds01's policy on a SLURM cluster (docs/slurm.md).", no_args_is_help=True
)


@app.command("export")
def export(
    ctx: typer.Context,
    out_arg: Annotated[
        str,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Directory for slurm-ds01.conf, gres.conf, cgroup.conf, sacctmgr.sh (made if"
            " missing; its parent must exist).",
        ),
    ],
    diff: Annotated[
        bool,
        typer.Option(
            "--diff",
            help="Write nothing: print what would change in --out's files and in the live"
            " cluster's accounts, QOS and users (sacctmgr); nothing when all match.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='With --diff: print {"files": {NAME: unified diff}, "changes": [line, ...]}.',
        ),
    ] = False,
) -> None:
    """Render ds01.yaml as SLURM policy: GRES, partition, cgroup.conf and a sacctmgr script."""
    from ds01.config import load_config
    from ds01.files import write_atomic
    from ds01.slurm.inputs import node_machines, nss_members
    from ds01.slurm.policy import build_policy
    from ds01.slurm.render import render_all

    out = _out_dir(out_arg)
    config = load_config(globals_of(ctx).paths().config)
    policy = build_policy(config, node_machines(config), nss_members(config))
    files = render_all(policy)
    if diff:
        from ds01.slurm.diff import live_diff

        file_diffs: dict[str, list[str]] = {}
        for name, text in files.items():
            path = out / name
            old = path.read_text() if path.is_file() else ""
            if old != text:
                file_diffs[name] = list(
                    difflib.unified_diff(
                        old.splitlines(),
                        text.splitlines(),
                        str(path),
                        f"{path} (export)",
                        lineterm="",
                    )
                )
        changes = live_diff(policy)
        if as_json:
            from ds01.cli.output import print_json

            print_json(
                {"files": {k: "\n".join(v) for k, v in file_diffs.items()}, "changes": changes}
            )
            return
        for line in [*(ln for diff_lines in file_diffs.values() for ln in diff_lines), *changes]:
            typer.echo(shown(line))
        return
    if as_json:
        raise UsageError("--json goes with --diff", fix="Add --diff, or leave --json out.")
    out.mkdir(exist_ok=True)
    for name, text in files.items():
        write_atomic(out / name, text, 0o755 if name.endswith(".sh") else 0o644)
    typer.echo(
        shown(
            f"wrote {', '.join(files)} to {out}: Include slurm-ds01.conf from slurm.conf, put"
            " gres.conf and cgroup.conf beside it on every node, run sacctmgr.sh, then"
            " 'scontrol reconfigure' (docs/slurm.md)"
        )
    )


def _out_dir(value: str) -> Path:
    """--out, checked before anything is read or written: an existing directory, or a new one
    in an existing directory (ds01 runs as root here: it makes no tree of parents by a typo)."""
    if not value.strip():
        raise UsageError("--out is empty", fix="Give a directory, e.g. --out ./slurm-policy.")
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {shown(value)} is not a directory", fix="Give a directory for the files."
        )
    if not out.exists() and not out.parent.is_dir():
        raise UsageError(
            f"--out {shown(value)}: its parent {shown(str(out.parent))} is not a directory",
            fix="Create the parent first, or choose another --out.",
        )
    return out
