"""`ds01 project …`: a project folder in ~/workspace that runs in its own GPU container —
`init` makes it, `launch` builds its image (when missing) and deploys it through ds01d."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ds01.cli.imagectx import framework_bases, images_of, me
from ds01.cli.output import console, print_json, styled
from ds01.errors import Ds01Error, UsageError

app = typer.Typer(
    help="Projects: a folder with git, a README and an image, launched in a GPU container.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def project_folder(name: str) -> Path:
    from ds01.images.recipe import check_name

    return Path.home() / "workspace" / check_name(name, "project")


@app.command()
def init(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The project's name, e.g. thesis.")],
    framework: Annotated[
        str | None,
        typer.Option(
            "--framework", "-f", metavar="NAME", help="pytorch (default), tensorflow, jax, …"
        ),
    ] = None,
    pip: Annotated[
        list[str] | None,
        typer.Option("--pip", metavar="PKG", help="A Python package for the image."),
    ] = None,
    apt: Annotated[
        list[str] | None,
        typer.Option("--apt", metavar="PKG", help="A Debian/Ubuntu package for the image."),
    ] = None,
    requirements: Annotated[
        str | None,
        typer.Option(
            "--requirements", "-r", metavar="FILE", help="Copy this file as requirements.txt."
        ),
    ] = None,
    gpus: Annotated[
        int, typer.Option("--gpus", min=0, max=64, metavar="N", help="Whole GPUs (0: CPU only).")
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Create ~/workspace/NAME: data/, models/, notebooks/, src/, README, .gitignore, git,
    a Dockerfile, pyproject.toml with [tool.ds01], and .devcontainer/devcontainer.json.

    Safe to run again: existing files are kept (it says which) and missing ones added.
    """
    from ds01.images.build import check_template
    from ds01.images.recipe import image_ref
    from ds01.projects import scaffold

    folder = project_folder(name)
    template = check_template(
        framework_bases(ctx), framework, None, list(pip or []), list(apt or []), requirements
    )
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder", fix="Pick another name.")
    report = scaffold.init(folder, name, image_ref(me(), name), template, gpus)
    if as_json:
        print_json(report.as_json())
        return
    for item in report.created:
        console().print(styled(("created", "green"), f" {item}"), soft_wrap=True)
    for item in report.kept:
        console().print(styled(("kept", "cyan"), f"    {item}"), soft_wrap=True)
    for note in report.notes:
        console().print(styled(("note:", "yellow"), f" {note}"), soft_wrap=True)
    console().print(styled(f"Next: ds01 project launch {name}"), soft_wrap=True)


@app.command()
def launch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A project in ~/workspace.")],
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return at once; do not open a shell.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the project's image if it is missing, then deploy its container (named NAME)
    with the project folder mounted at /workspace and the GPUs of [tool.ds01].

    Safe to run again: a running container is kept, a stopped one started.
    """
    from ds01.api.schemas import ContainerOut, DeployIn
    from ds01.cli import deployview
    from ds01.cli.context import client_of
    from ds01.images.recipe import Recipe, image_ref
    from ds01.projects import settings

    folder = project_folder(name)
    if not folder.is_dir():
        raise UsageError(
            f"you have no project {name!r} ({folder})",
            fix=f"Create it with: ds01 project init {name}",
        )
    wanted = settings.read(folder)
    with client_of(ctx) as c:
        existing = next((x for x in c.containers() if x.name == name), None)
        if existing is not None:
            out = existing
            if existing.state != "running":
                c.container_op(name, "start")
                out = c.container(name)
            _launched(out.model_dump(mode="json"), as_json, detach, ctx, started=existing.state)
            return
        images = images_of(ctx, quiet=as_json)
        built = None
        if not images.exists(wanted.image):
            if wanted.image != image_ref(images.user, name):
                raise Ds01Error(
                    f"image {wanted.image!r} ([tool.ds01] image) is not on this server",
                    fix="Pull or build it, or set image back to "
                    f"{image_ref(images.user, name)!r} to have ds01 build ./Dockerfile.",
                )
            if not as_json:
                console().print(
                    styled(f"Building {wanted.image} from {folder}/Dockerfile..."), soft_wrap=True
                )
            built = images.build(name, Recipe.project(folder), wanted.framework)
        body = DeployIn(
            name=name,
            image=wanted.image,
            gpus=wanted.gpus if wanted.gpus and not wanted.mig else None,
            mig=list(wanted.mig) or None,
            cpu_only=wanted.gpus == 0 and not wanted.mig,
            workspace=str(folder),
            data=list(wanted.mounts),
            interactive=True,
        )
        got = c.deploy_or_queue(body, on_progress=None if as_json else _deploy_progress)
    if not isinstance(got, ContainerOut):
        from ds01.cli.queue_cmd import print_queued

        print_queued(got, as_json)
        return
    dumped = got.model_dump(mode="json")
    if as_json:
        print_json({**dumped, "built": built.as_json() if built else None})
        return
    shell_hint = detach or not sys.stdin.isatty()
    text, warnings = deployview.deployed(dumped, shell_hint)
    sys.stdout.write(text)
    sys.stderr.write(warnings)
    if not shell_hint:
        from ds01.cli.shell import open_shell

        raise typer.Exit(open_shell(ctx, name))


def _deploy_progress(text: str) -> None:
    from ds01.cli import deployview

    sys.stderr.write(deployview.progress_line(text))
    sys.stderr.flush()


def _launched(
    dumped: dict[str, object], as_json: bool, detach: bool, ctx: typer.Context, started: str
) -> None:
    if as_json:
        print_json({**dumped, "built": None})
        return
    what = "kept (already running)" if started == "running" else f"started (was {started})"
    console().print(styled(f"{dumped['name']}: {what}"), soft_wrap=True)
    if detach or not sys.stdin.isatty():
        console().print(
            styled(f"Open a shell: ds01 container shell {dumped['name']}"), soft_wrap=True
        )
        return
    from ds01.cli.shell import open_shell

    raise typer.Exit(open_shell(ctx, str(dumped["name"])))
