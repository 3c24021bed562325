"""`ds01 image …`: images from the lab's framework templates, built through your Docker access
(the gate): build, add packages, list, remove."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ds01.cli.imagectx import framework_bases, images_of
from ds01.cli.output import console, new_table, print_json, styled
from ds01.errors import UsageError

app = typer.Typer(
    help="Build images from framework templates (PyTorch, TensorFlow, JAX) with your packages.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
PipOpt = Annotated[
    list[str] | None,
    typer.Option("--pip", metavar="PKG", help="A Python package (repeat for more)."),
]
AptOpt = Annotated[
    list[str] | None,
    typer.Option("--apt", metavar="PKG", help="A Debian/Ubuntu package (repeat for more)."),
]


def _done(built: Any, as_json: bool) -> None:
    if as_json:
        print_json(built.as_json())
        return
    for note in built.notes:
        console().print(styled(("note:", "yellow"), f" {note}"), soft_wrap=True)
    console().print(
        styled(("✓", "green"), f" built {built.image} ({built.id[7:19]})"), soft_wrap=True
    )
    console().print(
        styled(f"  Dockerfile: {built.dockerfile} (yours to read and edit)"), soft_wrap=True
    )


@app.command()
def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A short name for the image, e.g. thesis.")],
    framework: Annotated[
        str | None,
        typer.Option(
            "--framework",
            "-f",
            metavar="NAME",
            help="pytorch (default), tensorflow, jax, or one the lab added.",
        ),
    ] = None,
    pip: PipOpt = None,
    apt: AptOpt = None,
    requirements: Annotated[
        str | None,
        typer.Option("--requirements", "-r", metavar="FILE", help="A pip requirements file."),
    ] = None,
    from_image: Annotated[
        str | None,
        typer.Option("--from", metavar="IMAGE", help="Base image instead of a framework's."),
    ] = None,
    dockerfile: Annotated[
        str | None,
        typer.Option("--dockerfile", metavar="FILE", help="Build your own Dockerfile instead."),
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option("--rebuild", help="Build the image's kept Dockerfile again, as it is."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a Dockerfile from a framework template and build it as ds01-<you>/NAME:latest.

    The Dockerfile is kept in ~/.config/ds01/dockerfiles/NAME/ for you to read and edit;
    --rebuild builds it again. Build progress streams to stderr. The base image must be on
    the server or pullable.
    """
    from pathlib import Path

    from ds01.images.build import check_template
    from ds01.images.recipe import Recipe, check_name, image_ref

    check_name(name)
    spec_options = {
        "--framework": framework,
        "--from": from_image,
        "--pip": pip,
        "--apt": apt,
        "--requirements": requirements,
    }
    given = [k for k, v in spec_options.items() if v]
    images = images_of(ctx, quiet=as_json)
    ref = image_ref(images.user, name)
    if dockerfile is not None:
        if given:
            raise UsageError(
                f"--dockerfile builds your file as it is; {', '.join(given)} would be ignored",
                fix="Put those packages in your Dockerfile, or leave --dockerfile out.",
            )
        path = Path(dockerfile).expanduser().absolute()
        if not path.is_file():
            raise UsageError(f"--dockerfile {dockerfile!r}: no such file")
        if not rebuild:
            images.refuse_existing(name, ref)
        _done(images.build(name, Recipe(path.parent, path)), as_json)
        return
    if rebuild:
        if given:
            raise UsageError(
                f"--rebuild builds the kept Dockerfile as it is; {', '.join(given)} would be "
                "ignored",
                fix=f"Add packages with 'ds01 image add {name} PKG...'.",
            )
        recipe = images.recipe_of(name)
        if recipe is None:
            raise UsageError(
                f"there is no Dockerfile of {name!r} to rebuild",
                fix=f"Start from a template: ds01 image build {name} --framework pytorch",
            )
        _done(images.build(name, recipe), as_json)
        return
    template = check_template(
        framework_bases(ctx), framework, from_image, list(pip or []), list(apt or []), requirements
    )
    images.refuse_existing(name, ref)
    recipe = Recipe.kept(images.home, name)
    notes = images.write_template(name, recipe, template)
    built = images.build(name, recipe, template.framework)
    built.notes = notes
    _done(built, as_json)


@app.command()
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="One of your images (ds01 image list).")],
    packages: Annotated[list[str], typer.Argument(help="Python packages to add.")],
    apt: AptOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add Python packages (and --apt system packages) to your image and rebuild it.

    The steps are appended to the image's Dockerfile, so earlier layers are reused. If the
    build fails, the Dockerfile is put back as it was.
    """
    from ds01.images.packages import apt_packages, pip_packages
    from ds01.images.recipe import check_name

    check_name(name)
    pip_list, apt_list = tuple(pip_packages(packages)), tuple(apt_packages(list(apt or [])))
    _done(images_of(ctx, quiet=as_json).add(name, pip_list, apt_list), as_json)


def _rows(images: list[dict[str, Any]], me: str) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from ds01.images.recipe import OWNER_FIELD

    rows = []
    for image in images:
        owner = image.get(OWNER_FIELD)
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        if not tags:
            continue  # untagged layers and leftovers: nothing a deploy could name
        rows.append(
            {
                "tags": tags,
                "id": str(image.get("Id", "")),
                "owner": owner if owner else ("shared" if owner == "" else None),
                "yours": owner == me,
                "size_bytes": int(image.get("Size") or 0),
                "created": datetime.fromtimestamp(int(image.get("Created") or 0), UTC).isoformat(),
            }
        )
    return sorted(rows, key=lambda r: (not r["yours"], r["tags"][:1] or ["~"]))


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your images and the lab's shared ones (the only ones you can use)."""
    images = images_of(ctx)
    rows = _rows(images.docker.images(), images.user)
    if as_json:
        print_json(rows)
        return
    from ds01.cli.statsview import size

    t = new_table()
    for col in ("Image", "Whose", "ID", "Size", "Created"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            "\n".join(r["tags"]),
            "yours" if r["yours"] else (r["owner"] or "?"),
            r["id"][7:19],
            size(r["size_bytes"]),
            r["created"][:16].replace("T", " "),
        )
    console().print(t)


@app.command()
def rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Your image's name, or a full IMAGE:TAG.")],
) -> None:
    """Remove one of your images (its Dockerfile stays, so you can build it again)."""
    from ds01.errors import Ds01Error
    from ds01.images.recipe import IMAGE_REF, check_name, image_ref

    images = images_of(ctx)
    ref = name if ("/" in name or ":" in name) else image_ref(images.user, check_name(name))
    if not IMAGE_REF.fullmatch(ref):
        raise UsageError(f"{name!r} is not an image name", fix="ds01 image list shows yours.")
    try:
        found = images.docker.image(ref) is not None
        recipe = images.recipe_of(name) if found and ref != name else None
        if found:
            images.docker.remove(ref)
    except Ds01Error as e:
        raise Ds01Error(
            e.what,
            why=e.why or "You can remove only your own images; shared ones belong to the lab.",
            fix="ds01 image list shows yours; ask the image's owner or an admin about theirs. "
            "An image a container of yours runs on: retire the container first.",
        ) from e
    if not found:
        raise Ds01Error(f"you have no image {name!r}", fix="ds01 image list shows yours.")
    console().print(styled(("✓", "green"), f" removed {ref}"), soft_wrap=True)
    if recipe is not None:
        console().print(styled(f"  Its Dockerfile stays: {recipe.dockerfile}"), soft_wrap=True)
    sys.stdout.flush()
