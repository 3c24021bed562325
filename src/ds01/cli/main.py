"""Entry point of the `ds01` command: the command tree and the one error path."""

from __future__ import annotations

import enum
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperArgument

from ds01 import __version__
from ds01.cli.context import Globals
from ds01.errors import Ds01Error, UsageError

app = typer.Typer(
    name="ds01",
    help="ds01: GPUs and MIG slices for your containers, within your lab's fair share.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ds01 {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        str | None, typer.Option("--config", help="Config file [env DS01_CONFIG].")
    ] = None,
    state_dir: Annotated[
        str | None, typer.Option("--state-dir", help="State directory [env DS01_STATE_DIR].")
    ] = None,
    run_dir: Annotated[
        str | None, typer.Option("--run-dir", help="Socket directory [env DS01_RUN_DIR].")
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    for option, value in (("--config", config), ("--state-dir", state_dir), ("--run-dir", run_dir)):
        if value is not None and not value.strip():
            # Not "the default": an empty value is a variable that was meant to be set.
            raise UsageError(f"{option} is empty", fix="Give a path, or leave the option out.")
    ctx.obj = Globals(config=config, state_dir=state_dir, run_dir=run_dir)


def _register() -> None:
    # Each group lives in its own module; modules import heavy libraries lazily.
    from ds01.cli import admin_cmd, config_cmd, container_cmd, events_cmd, gpu_cmd, quota_cmd

    app.add_typer(container_cmd.app, name="container")
    app.add_typer(gpu_cmd.app, name="gpu")
    app.command("quota")(quota_cmd.quota)
    app.command("events")(events_cmd.events)
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(admin_cmd.app, name="admin")
    from ds01.cli import doctor_cmd, host_cmd

    app.add_typer(host_cmd.app, name="host")
    app.command("doctor")(doctor_cmd.doctor)
    from ds01.cli import access_cmd

    app.command("access")(access_cmd.access)
    from ds01.cli import queue_cmd

    app.add_typer(queue_cmd.app, name="queue")
    from ds01.cli import report_cmd

    app.add_typer(report_cmd.app, name="report")
    from ds01.cli import top_cmd

    app.command("top")(top_cmd.top)
    from ds01.cli import image_cmd, project_cmd

    app.add_typer(image_cmd.app, name="image")
    app.add_typer(project_cmd.app, name="project")
    from ds01.cli import slurm_cmd

    app.add_typer(slurm_cmd.app, name="slurm")


_register()


# What a value is, in --help, where the parameter's own name would not say it.
_METAVARS = {
    "gpus": "N",
    "gpueq": "X",
    "mig": "PROFILE",
    "workspace": "DIR",
    "data": "DIR",
    "env": "KEY=VALUE",
    "since": "AGE|TIME",
    "limit": "N",
    "tail": "N",
    "command": "CMD",
    "for_": "DURATION",
}


class _NamedArgument(TyperArgument):
    """An argument shown by its name alone (`NAME`, `[NAME]`, `CMD...`), as in every Unix
    usage line, not followed by its Python type (`NAME <str>`) nor braced (`{NAME}`)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        return name if self.required else f"[{name}]"


def _human_metavars(command: Any) -> None:
    """Name each value in --help (NAME, N, DIR…) instead of its Python type (<list[str]>);
    options with a fixed set of values keep the list of them."""
    for param in getattr(command, "params", ()):
        if param.metavar is not None or getattr(param, "is_flag", False):
            continue
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            continue  # shown as its list of values
        name = str(param.name or "value")
        metavar = _METAVARS.get(name, name.upper())
        if isinstance(param, TyperArgument):
            if param.nargs == -1:
                metavar += "..."
            param.__class__ = _NamedArgument  # same state, only its help lines differ
        param.metavar = metavar
    for sub in getattr(command, "commands", {}).values():
        _human_metavars(sub)


def run() -> None:
    """Console-script entry: maps ds01 errors to exit 1 (refusal) or 2 (usage), never a trace."""
    from ds01.cli.output import print_error

    command = typer.main.get_command(app)
    _human_metavars(command)
    try:
        command(prog_name="ds01")
    except Ds01Error as err:
        print_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
