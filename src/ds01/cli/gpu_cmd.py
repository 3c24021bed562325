"""`ds01 gpu`: what GPUs and MIG devices this machine has, and driving a simulated machine.

    ds01 gpu inventory [--from CAPTURE | --sim MACHINE] [--json]   GPUs, MIG devices, processes
    ds01 gpu status    [--sim MACHINE] [--json]                    allocatable units
    ds01 gpu sim list | copy NAME DEST | set FILE …                simulated machines

Commands parse flags, take one sample, and render it; they read the local inventory directly
(NVML, a machine file, or a saved nvidia-smi capture), which every user may do (BRIEF §2).
Must not import NVML, the nvidia-smi parsers or Rich at module level: `ds01 --help` stays fast.
Errors are ds01 errors; cli/main.py prints them (exit 2 for bad input).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ds01.cli.context import globals_of
from ds01.cli.statusview import (
    daemon_status_output,
    dash,
    local_status,
    memory_cell,
)
from ds01.cli.table import output_width
from ds01.cli.text import short_uuid, shown
from ds01.errors import InputError, UsageError

if TYPE_CHECKING:
    from rich.table import Table

    from ds01.model.inventory import MachineSample

app = typer.Typer(help="GPU inventory and status; simulated machines.", no_args_is_help=True)
sim_app = typer.Typer(help="Simulated machines: list, copy, and drive them.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")

SimOption = Annotated[
    str | None,
    typer.Option(
        "--sim",
        metavar="MACHINE",
        help="Use a simulated machine: a YAML file or a shipped name (ds01 gpu sim list).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (fields: docs/inventory.md).")]
WideOption = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="Whole UUIDs and model names, however wide the table gets (by default tables "
        "fit the terminal, 80 columns when not on one).",
    ),
]


def _take_sample(ctx: typer.Context, sim: str | None) -> MachineSample:
    from ds01.inventory.select import backend_from_cli

    backend = backend_from_cli(sim, globals_of(ctx).paths().config)
    try:
        return backend.sample()
    finally:
        backend.close()


def _load_captures(paths: list[Path]) -> MachineSample:
    for path in paths:
        if not path.is_file():
            raise InputError(f"--from {path}: no such file")
    from ds01.inventory.smi import load_capture, load_captures

    return load_capture(paths[0]) if len(paths) == 1 else load_captures(paths)


def _table(title: str) -> Table:
    # Two spaces between columns and none at the edges: the tables fit 80 columns.
    from rich import box

    from ds01.cli.output import new_table

    return new_table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )


def print_wide(table: Table, wide: bool) -> None:
    """A table on stdout; with --wide at its full width, however wide the terminal."""
    from ds01.cli.output import console

    if wide:  # a console as wide as the table needs (as console(): no markup, no emoji)
        from rich.console import Console

        Console(width=100_000, highlight=False, markup=False, emoji=False).print(table)
    else:
        console().print(table)


def inventory_tables(sample: MachineSample, wide: bool = False) -> list[Table | str]:
    """GPUs with their MIG devices, then processes (or a line saying there are none). A row's
    first cell is the unit's name (model/inventory.py unit_name): '3', or '7/1.0' for a MIG
    device; Dev is the driver's MIG device index, which can renumber."""
    from ds01.inventory.export import unit_names
    from ds01.model.inventory import UnitKind, unit_name

    def uuid(text: str) -> str:
        return text if wide else short_uuid(text)

    gpus = _table(f"GPUs ({sample.source})")
    gpus.add_column("Unit", no_wrap=True)
    gpus.add_column("UUID", no_wrap=True)
    gpus.add_column("Name / profile", no_wrap=True, overflow="ellipsis", min_width=14)
    gpus.add_column("Dev", no_wrap=True, justify="right")
    gpus.add_column("Memory GiB", no_wrap=True)
    # gpueq per unit; a GPU with MIG on is not a unit itself, its MIG devices are.
    # Temperature and power are in --json: the table keeps to 80 columns.
    for column in ("gpueq", "Util", "NUMA"):
        gpus.add_column(column, no_wrap=True, justify="right")
    for g in sample.gpus:
        gpus.add_row(
            unit_name(g.index, UnitKind.GPU),
            uuid(g.uuid),
            g.name.removeprefix("NVIDIA "),
            "",
            memory_cell(g.memory_used_mib, g.memory_total_mib),
            {True: "MIG", False: "1", None: "1"}[g.mig_enabled],
            dash(g.utilization_pct, "{:.0f}%"),
            dash(g.numa_node),
        )
        for m in g.mig_devices:
            gpus.add_row(
                unit_name(g.index, UnitKind.MIG, m.gpu_instance_id, m.compute_instance_id),
                uuid(m.uuid),
                f" {m.profile or '?'}",
                dash(m.index),
                memory_cell(m.memory_used_mib, m.memory_total_mib),
                dash(m.gpueq.display() if m.gpueq else None),
                "–",
                "",
            )
        for u in g.unkeyed_mig_devices:  # shown by a capture without a UUID: never a unit
            gpus.add_row(
                unit_name(g.index, UnitKind.MIG, u.gpu_instance_id, u.compute_instance_id),
                "no UUID",
                f" {u.profile or '?'}",
                dash(u.index),
                memory_cell(u.memory_used_mib, u.memory_total_mib),
                "–",
                "–",
                "",
            )
    names = unit_names(sample)
    procs = _table("Processes")
    for column in ("PID", "Unit", "UUID", "Memory"):
        procs.add_column(column, no_wrap=True)
    procs.add_column("Name", no_wrap=True, overflow="ellipsis")
    for p in sample.processes:
        on = p.unit_uuid or p.gpu_uuid
        procs.add_row(
            str(p.pid),
            names.get(on, "–"),
            uuid(on),
            dash(p.used_memory_mib, "{} MiB"),  # per process, MiB as nvidia-smi shows it
            dash(p.name),
        )
    return [gpus, procs if sample.processes else "No compute processes."]


def _print_warnings(sample: MachineSample) -> None:
    from ds01.cli.output import err_console, styled

    for warning in sample.warnings:
        err_console().print(styled(f"warning: {warning}"), soft_wrap=True)


@app.command("inventory")
def inventory(
    ctx: typer.Context,
    from_: Annotated[
        list[Path] | None,
        typer.Option(
            "--from",
            metavar="CAPTURE",
            help="Read saved nvidia-smi output instead of NVML; repeat to combine captures of "
            "one machine (e.g. -q -x for readings with -L for MIG UUIDs and profiles).",
        ),
    ] = None,
    sim: SimOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """GPUs, MIG devices and compute processes, from the configured backend (NVML, or a
    simulated machine), a simulated machine (--sim), or a saved nvidia-smi capture (--from)."""
    from ds01.cli.output import console, print_json
    from ds01.inventory.export import sample_to_json

    if from_ and sim is not None:
        raise UsageError("--from and --sim cannot be used together", fix="Choose one source.")
    sample = _load_captures(from_) if from_ else _take_sample(ctx, sim)
    if as_json:
        print_json(sample_to_json(sample))
        _print_warnings(sample)  # also in the JSON; on stderr so that no one misses them
        return
    for table in inventory_tables(sample, wide):
        if isinstance(table, str):
            console().print(table)
        else:
            print_wide(table, wide)
    _print_warnings(sample)


@app.command("status")
def status(
    ctx: typer.Context, sim: SimOption = None, as_json: JsonOption = False, wide: WideOption = False
) -> None:
    """Every allocatable unit (whole GPU or MIG device): model, memory, utilization ('–' where
    the GPU does not report it, as for every MIG device), gpueq, and who holds it.

    Asks ds01d; with --sim, or when ds01d cannot be reached, reads the GPUs directly and shows
    no holders (and says so)."""
    from ds01.cli.output import err_console, print_json, styled
    from ds01.errors import DaemonUnavailable
    from ds01.inventory.export import units_to_json

    if sim is None:
        from ds01.cli.context import client_of

        try:
            with client_of(ctx) as c:
                view = c.gpu_status()
        except DaemonUnavailable as err:
            err_console().print(
                styled(f"note: {err.what}; showing the GPUs without who holds them.")
            )
        else:
            if as_json:
                print_json(view.model_dump(mode="json"))
            else:
                out, warnings = daemon_status_output(
                    view.model_dump(mode="json"), wide, output_width()
                )
                sys.stdout.write(out)
                sys.stderr.write(warnings)
            return
    sample = _take_sample(ctx, sim)
    if as_json:
        print_json(units_to_json(sample))
        return
    sys.stdout.write(local_status(sample, wide, output_width()))
    _print_warnings(sample)


@sim_app.command("list")
def sim_list() -> None:
    """The simulated machines shipped with ds01 (use one with --sim NAME)."""
    from ds01.inventory.sim import load_machine, shipped_machines

    for name, path in shipped_machines().items():
        sample = load_machine(path)
        units = sample.units()
        typer.echo(f"{name}\t{len(sample.gpus)} GPUs, {len(units)} units\t{path}")


@sim_app.command("copy")
def sim_copy(
    name: Annotated[str, typer.Argument(help="A shipped machine (ds01 gpu sim list).")],
    dest: Annotated[Path, typer.Argument(help="Where to write the copy.")],
) -> None:
    """Copy a shipped machine to a file you can edit and drive with 'ds01 gpu sim set'."""
    from ds01.inventory.sim import shipped_machines

    shipped = shipped_machines()
    if name not in shipped:
        raise InputError(
            f"no shipped machine named '{name}'", fix=f"Shipped machines: {', '.join(shipped)}."
        )
    if dest.exists():
        raise InputError(f"{dest} already exists", fix="Choose a new file name.")
    try:
        dest.write_text(shipped[name].read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as e:
        raise InputError(
            f"cannot write {dest}: {e.strerror}", fix="Choose a file in a directory you can write."
        ) from None
    typer.echo(shown(f"wrote {dest}"))


@sim_app.command("set")
def sim_set(
    machine: Annotated[str, typer.Argument(metavar="FILE", help="The machine file to change.")],
    unit: Annotated[
        str | None,
        typer.Option(help="The unit for --util / --clear-processes: UUID, '3' or '5/0'."),
    ] = None,
    util: Annotated[
        str | None,
        typer.Option(help="Utilization % of --unit (a whole GPU), or 'unknown'."),
    ] = None,
    add_process: Annotated[
        list[str] | None,
        typer.Option(
            "--add-process",
            metavar="PID:UNIT[:MiB[:NAME]]",
            help="Add a compute process (repeatable).",
        ),
    ] = None,
    clear_processes: Annotated[
        bool,
        typer.Option(
            "--clear-processes", help="Remove processes (only on --unit, when given) first."
        ),
    ] = False,
) -> None:
    """Change a simulated machine: a running `--sim` backend sees it on its next sample.

    Changes apply in this order, in one atomic write: --clear-processes, --add-process, --util.
    """
    from ds01.inventory import sim as simmod

    path = simmod.resolve_machine(machine)
    changes: list[simmod.Change] = []
    if clear_processes:
        changes.append(simmod.clear_processes_change(unit))
    for text in add_process or []:
        pid, ref, mib, name = simmod.parse_process_arg(text)
        changes.append(simmod.add_process_change(pid, ref, mib, name))
    if util is not None:
        if unit is None:
            raise UsageError("--util needs --unit", fix="Add --unit UUID (or a GPU index).")
        changes.append(simmod.utilization_change(unit, _parse_util(util)))
    if not changes:
        raise UsageError(
            "nothing to change",
            fix="Give --util (with --unit), --add-process or --clear-processes.",
        )
    for line in simmod.edit_machine(path, changes):
        typer.echo(shown(line))


def _parse_util(text: str) -> float | None:
    if text.strip().lower() in ("unknown", "none", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(
            f"--util '{text}' is not a number", fix="Give a percentage (0 to 100) or 'unknown'."
        ) from None
