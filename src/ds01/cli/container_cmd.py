"""`ds01 container …`: deploy and manage your GPU containers (all through ds01d)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ds01.cli import deployview, readviews
from ds01.cli.context import client_of
from ds01.cli.output import console, err_console, lines, new_table, print_json, styled
from ds01.cli.table import output_width
from ds01.errors import UsageError
from ds01.timetext import clock

if TYPE_CHECKING:
    from ds01.api.schemas import ContainerOut, DeployIn

app = typer.Typer(help="Deploy and manage your GPU containers.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _env(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _gpu_lines(c: ContainerOut) -> list[str]:
    """One line per GPU (a table cell of several lines; see output.new_table)."""
    if c.gpus:
        return [
            f"{u.uuid} ({u.model.removeprefix('NVIDIA ')}{' ' + u.profile if u.profile else ''})"
            for u in c.gpus
        ]
    if c.gpu_device_ids:
        return [*c.gpu_device_ids, "(no live allocation)"]
    return ["none (CPU only)"]


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        err_console().print(styled(("warning:", "yellow"), f" {warning}"), soft_wrap=True)


@app.command()
def deploy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A short name for the container, e.g. thesis.")],
    image: Annotated[str, typer.Option("--image", "-i", help="Image to run.")],
    gpus: Annotated[int | None, typer.Option("--gpus", min=1, help="Whole GPUs.")] = None,
    mig: Annotated[
        str | None, typer.Option("--mig", help="MIG profile(s), e.g. 3g.40gb or 1g.10gb,1g.10gb.")
    ] = None,
    gpueq: Annotated[
        str | None, typer.Option("--gpueq", help="Any GPUs/slices worth at least this.")
    ] = None,
    cpu_only: Annotated[bool, typer.Option("--cpu-only", help="No GPU.")] = False,
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Your directory, mounted at /workspace.")
    ] = None,
    data: Annotated[
        list[str] | None, typer.Option("--data", help="Extra directory at /data/NAME (read-only).")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return at once; do not open a shell.")
    ] = False,
    command: Annotated[
        list[str] | None, typer.Argument(help="Command to run (after --); default: a shell.")
    ] = None,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="When your quota allows it but no GPU is free, wait in the queue; ds01 starts "
            "the container when GPUs free up and tells you.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Allocate GPUs, create your container pinned to them, and start it.

    With no GPU option you get one whole GPU. Without --detach, a shell opens in the container.
    With --queue, a full server queues the request instead of refusing it (see ds01 queue).
    """
    for option, path in (("--workspace", workspace), *(("--data", d) for d in data or [])):
        if path is not None and not path.strip():
            raise UsageError(f"{option} is empty", fix="Give an absolute directory.")
    profiles = None if mig is None else [p.strip() for p in mig.split(",") if p.strip()]
    if profiles == []:
        raise UsageError(
            f"--mig {mig!r} names no MIG profile",
            fix="Give profiles like 3g.40gb or 1g.10gb,1g.10gb.",
        )
    body = _deploy_request(
        ctx,
        name=name,
        image=image,
        gpus=gpus,
        mig=profiles,
        gpueq=gpueq,
        cpu_only=cpu_only,
        workspace=workspace,
        data=list(data or []),
        env=_env(list(env or [])),
        command=list(command) if command else None,
        # No command: keep the image's shell alive with a terminal, like `docker run -dit`.
        interactive=not command,
        queue=queue,
    )
    from ds01.cli import slurmjobs

    cluster = slurmjobs.slurm_config(ctx)
    if cluster is not None:
        slurmjobs.deploy(cluster, body, as_json)
        return
    with client_of(ctx) as c:
        got = c.deploy_or_queue(body, on_progress=None if as_json else _print_progress)
    from ds01.api.schemas import ContainerOut

    if not isinstance(got, ContainerOut):
        from ds01.cli.queue_cmd import print_queued

        print_queued(got, as_json)
        return
    out = got
    if as_json:
        print_json(out.model_dump(mode="json"))
        return
    shell_hint = detach or not sys.stdin.isatty()
    text, warnings = deployview.deployed(out.model_dump(mode="json"), shell_hint)
    sys.stdout.write(text)
    sys.stderr.write(warnings)
    if shell_hint:
        return
    from ds01.cli.shell import open_shell

    raise typer.Exit(open_shell(ctx, out.name))


# The deploy options that name a field of DeployIn differently.
_OPTION_OF = {"name": "NAME", "cpu_only": "--cpu-only", "command": "COMMAND"}


def _deploy_request(ctx: typer.Context, **fields: Any) -> DeployIn:
    """The request for ds01d. A value its schema refuses (--gpus 99, two GPU options at once,
    a 100-character name) is a usage error that names the option, not a pydantic traceback."""
    from pydantic import ValidationError

    from ds01.api.schemas import DeployIn

    try:
        return DeployIn(**fields)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        loc = first["loc"]
        if loc and isinstance(loc[0], str):
            option = _OPTION_OF.get(loc[0], "--" + loc[0].replace("_", "-"))
            what = f"{option} {ctx.params.get(loc[0], fields.get(loc[0]))!r}: {message}"
        else:
            what = message
        raise UsageError(what, fix=f"See '{ctx.command_path} --help'.") from None


def _print_progress(text: str) -> None:
    sys.stderr.write(deployview.progress_line(text))
    sys.stderr.flush()


@app.command("list")
def list_(
    ctx: typer.Context,
    all_users: Annotated[bool, typer.Option("--all", help="Everyone's (admins).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your containers, their GPUs, and the state of their allocation."""
    from ds01.cli import slurmjobs

    if slurmjobs.slurm_config(ctx) is not None:
        slurmjobs.list_(as_json)
        return
    with client_of(ctx) as c:
        rows = c.containers(all_users=all_users)
    dumped = [r.model_dump(mode="json") for r in rows]
    if as_json:
        print_json(dumped)
        return
    sys.stdout.write(readviews.container_list(dumped, all_users, output_width()))


@app.command()
def stats(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="One of your running containers (default: all of them).")
    ] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Everyone's (admins).")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Redraw every 2 s until q or Ctrl-C.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """CPU %, memory used / limit, and GPU memory and activity per GPU of your running
    containers, from ds01d's own samples (every gpu.sample_interval).

    CPU % is of one core (200% = two cores busy), as docker stats shows it. MIG devices report
    no utilization (NVML): their memory in use shows activity.
    """
    from ds01.cli import slurmjobs, statsview
    from ds01.errors import Ds01Error

    slurmjobs.refuse_single_server(ctx, "stats", name)
    if name is not None and all_users:
        raise UsageError("NAME and --all cannot be used together", fix="Give one or the other.")
    if watch and as_json:
        raise UsageError(
            "--watch and --json cannot be used together",
            fix="Use --json alone (once), e.g. in a loop: watch -n2 ds01 container stats --json",
        )
    a = statsview.Args(name, all_users, watch, as_json)
    with client_of(ctx) as c:
        first = c.container_stats(name, all_users)

        def fetch() -> Any:
            try:
                return c.container_stats(name, all_users)
            except Ds01Error:
                return None  # the live view says ds01d did not answer, and tries again

        code = statsview.show(a, first, fetch)
    raise typer.Exit(code)


# What a stop does, said before it starts: the wait can take STOP_GRACE_S seconds.
_STOPPING = {
    "stop": "Stopping {name}",
    "restart": "Restarting {name}: stopping",
}


def _op(ctx: typer.Context, name: str, op: str) -> None:
    from ds01.api.schemas import ContainerOut
    from ds01.model.limits import STOP_GRACE_S

    with client_of(ctx) as c:
        if op in _STOPPING:
            err_console().print(
                styled(
                    _STOPPING[op].format(name=name)
                    + f" (SIGTERM now; SIGKILL in {STOP_GRACE_S} s if it has not exited)..."
                ),
                soft_wrap=True,
            )
        data = c.container_op(name, op)
    if op == "retire":
        console().print(styled(f"{name} retired: container removed, GPUs released."))
        return
    out = ContainerOut.model_validate(data)
    alloc = readviews.allocation_text(data)
    console().print(styled(f"{out.name}: {out.state}; allocation {alloc}"))
    _print_warnings(out.warnings)


@app.command()
def start(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Start a stopped container (allocating GPUs again if they were released)."""
    from ds01.cli import slurmjobs

    slurmjobs.refuse_single_server(ctx, "start", name)
    _op(ctx, name, "start")


@app.command()
def stop(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Stop a container; its GPUs are held for a grace period, then released."""
    from ds01.cli import slurmjobs

    if slurmjobs.slurm_config(ctx) is not None:
        slurmjobs.stop(name)
        return
    _op(ctx, name, "stop")


@app.command()
def restart(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Stop and start a container."""
    from ds01.cli import slurmjobs

    slurmjobs.refuse_single_server(ctx, "restart", name)
    _op(ctx, name, "restart")


@app.command()
def retire(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Stop and remove a container and release its GPUs now. Mounted directories stay."""
    from ds01.cli import slurmjobs

    if slurmjobs.slurm_config(ctx) is not None:
        slurmjobs.stop(name)  # a job's container is removed when it ends (podman run --rm)
        return
    _op(ctx, name, "retire")


@app.command("keep-alive")
def keep_alive(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="One of your running containers with GPUs.")],
    for_: Annotated[
        str, typer.Option("--for", help="How long from now: 30m, 6h, 1h30m (at most your limit).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Keep a container from being stopped for idleness for a while (a job between GPU phases).

    The idle countdown starts again when the time is up; the runtime limit still applies.
    Renewals hold off at most your max_keepalive_total of idleness in a row; using the GPU
    starts a new allowance.
    """
    from ds01.cli import slurmjobs

    slurmjobs.refuse_single_server(ctx, "keep-alive", name)
    with client_of(ctx) as c:
        out = c.keep_alive(name, for_)
    dumped = out.model_dump(mode="json")
    if as_json:
        print_json(dumped)
        return
    console().print(styled(f"{out.name}: " + "; ".join(readviews.countdown_lines(dumped))))


@app.command()
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", min=0, help="Last N lines only.")] = None,
) -> None:
    """Print a container's output."""
    from ds01.cli import slurmjobs

    if slurmjobs.slurm_config(ctx) is not None:
        slurmjobs.logs(name, follow, tail)
        return
    with client_of(ctx) as c:
        for chunk in c.logs(name, follow=follow, tail=tail):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


def _limit_lines(c: ContainerOut) -> list[str]:
    from ds01.units import format_size

    lim = c.limits
    if lim is None:
        return ["–"]
    out = []
    if lim.cpus is not None:
        out.append(f"cpus {lim.cpus:g}")
    if lim.memory_bytes is not None:
        memory = f"memory {format_size(lim.memory_bytes)}"
        swap = lim.memory_swap_bytes
        if swap == -1:
            memory += " (swap unlimited)"
        elif swap is not None and swap > lim.memory_bytes:
            memory += f" (+ {format_size(swap - lim.memory_bytes)} swap)"
        out.append(memory)
    if lim.shm_bytes is not None:
        out.append(f"shm {format_size(lim.shm_bytes)}")
    if lim.pids is not None:
        out.append(f"pids {lim.pids}")
    return out or ["none"]


@app.command()
def inspect(
    ctx: typer.Context, name: Annotated[str, typer.Argument()], as_json: JsonOpt = False
) -> None:
    """Details of one container: GPUs, mounts, limits and environment (secrets hidden)."""
    from ds01.cli import slurmjobs

    if slurmjobs.slurm_config(ctx) is not None:
        slurmjobs.inspect(name, as_json)
        return
    with client_of(ctx) as c:
        out = c.container(name)
    if as_json:
        print_json(out.model_dump(mode="json"))
        return
    t = new_table(show_header=False)
    t.add_column("Field")
    t.add_column("Value")
    mounts = [f"{m.source} → {m.target}{' (read-only)' if m.read_only else ''}" for m in out.mounts]
    dumped = out.model_dump(mode="json")
    for key, value in (
        ("Name", out.name),
        ("Docker name", out.docker_name),
        ("ID", out.id[:12]),
        ("Image", out.image),
        ("State", out.state),
        ("GPUs", lines(_gpu_lines(out))),
        (
            "Allocation",
            lines([readviews.allocation_text(dumped), *readviews.countdown_lines(dumped)]),
        ),
        ("Created", clock(out.created)),
        ("Started", clock(out.started_at)),
        ("Mounts", lines(mounts or ["none"])),
        ("Limits", lines(_limit_lines(out))),
        ("Env", lines([f"{k}={v}" for k, v in sorted(out.env.items())] or ["none"])),
    ):
        t.add_row(key, value)
    console().print(t)


@app.command()
def shell(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Open a shell in a running container (input from a pipe or file works too).

    On a terminal the shell is interactive; with input from a pipe or a file (echo ls | ds01
    container shell NAME) it reads that input without a terminal and keeps stdout and stderr
    apart. Exits with the shell's exit status.
    """
    from ds01.cli import slurmjobs
    from ds01.cli.shell import open_shell

    slurmjobs.refuse_single_server(ctx, "shell", name)
    raise typer.Exit(open_shell(ctx, name))


@app.command("exec")
def exec_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="One of your running containers.")],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments, after --.")],
) -> None:
    """Run one command in a running container and exit with its exit status.

    Runs as you, without a terminal: its output and errors stream to your stdout and stderr;
    input from a pipe or file goes to its stdin. Example: ds01 container exec thesis -- nvidia-smi
    """
    from ds01.cli import slurmjobs
    from ds01.cli.shell import run_command

    slurmjobs.refuse_single_server(ctx, "exec", name)
    raise typer.Exit(run_command(ctx, name, list(command)))
