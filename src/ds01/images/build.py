"""Building a user's image: check the input, write (or keep) the Dockerfile, make sure its base
image is here, build through the user's Docker access, and say what happened.

Everything that can be refused is checked before a file is written or a build starts (name,
framework, packages, requirements file, an existing image, an edited Dockerfile, a base image
that is neither here nor pullable), so a refusal changes nothing. A Dockerfile the user edited
is never replaced: ds01 builds it as it is (--rebuild) or appends to it (`image add`, undone
if that build fails).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.errors import Ds01Error, UsageError
from ds01.images import dockerfile as df
from ds01.images.recipe import IMAGE_REF, LABEL_DOCKERFILE, Recipe, image_ref, labels

if TYPE_CHECKING:
    from ds01.runtime.userdocker import UserDocker


@dataclass
class Built:
    name: str
    image: str
    id: str
    dockerfile: str
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "image": self.image,
            "id": self.id,
            "dockerfile": self.dockerfile,
            "notes": self.notes,
        }


@dataclass
class Template:
    """What a new Dockerfile is made from (checked: see check_template)."""

    framework: str | None
    base: str
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    requirements: Path | None = None  # a file to copy next to the Dockerfile


def check_template(
    bases: dict[str, str],
    framework: str | None,
    from_image: str | None,
    pip: list[str],
    apt: list[str],
    requirements: str | None,
) -> Template:
    from ds01.images.packages import apt_packages, pip_packages

    if framework is not None and from_image is not None:
        raise UsageError(
            "--framework and --from both name the base image",
            fix="Give one: --framework NAME (the lab's image) or --from IMAGE.",
        )
    if from_image is not None:
        if not IMAGE_REF.fullmatch(from_image):
            raise UsageError(
                f"--from {from_image!r} is not an image name",
                fix="Give an image as docker images lists it, e.g. debian:12.",
            )
        base, chosen = from_image, None
    else:
        if framework == "":
            raise UsageError("--framework is empty", fix="Give one, e.g. --framework pytorch.")
        chosen = framework or "pytorch"
        if chosen not in bases:
            raise UsageError(
                f"unknown framework {chosen!r}",
                why=f"This server knows: {', '.join(sorted(bases))} (config images.frameworks).",
                fix="Pick one of those, or give a base image with --from IMAGE.",
            )
        base = bases[chosen]
    req = None
    if requirements is not None:
        req = Path(requirements).expanduser()
        if not req.is_file():
            raise UsageError(
                f"requirements file {requirements!r} not found",
                why="-r names a pip requirements file (one package per line).",
                fix="Check the path (relative paths start in the current directory).",
            )
        try:
            req.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {requirements!r}: {e.strerror}") from None
    return Template(chosen, base, tuple(pip_packages(pip)), tuple(apt_packages(apt)), req)


class Images:
    def __init__(
        self,
        docker: UserDocker,
        user: str,
        home: Path,
        progress: Callable[[str], None],
    ) -> None:
        self.docker = docker
        self.user = user
        self.home = home
        self.progress = progress

    def exists(self, ref: str) -> bool:
        return self.docker.image(ref) is not None

    def require_bases(self, bases: list[str], fix: str) -> None:
        """Each base image is here, or is pulled now; else refused (nothing built)."""
        for base in bases:
            if self.docker.image(base) is not None:
                continue
            self.progress(f"Base image {base} is not on this server; pulling it...\n")
            why = self.docker.pull(base, self.progress)
            if why is not None:
                raise Ds01Error(
                    f"base image {base!r} is not on this server and could not be pulled",
                    why=why,
                    fix=fix,
                )

    def refuse_existing(self, name: str, ref: str) -> None:
        if self.exists(ref):
            raise Ds01Error(
                f"you already have an image {name!r} ({ref})",
                fix=f"Add packages with 'ds01 image add {name} PKG...', rebuild it from its "
                f"Dockerfile with 'ds01 image build {name} --rebuild', or remove it with "
                f"'ds01 image rm {name}'.",
            )

    def write_template(self, name: str, recipe: Recipe, t: Template) -> list[str]:
        """Check, then write the Dockerfile (and requirements.txt) of a new image. Refused
        when the Dockerfile there holds the user's edits; notes of what was kept."""
        ref = image_ref(self.user, name)
        requirements = t.requirements is not None or (
            recipe.context != Recipe.kept(self.home, name).context
            and (recipe.context / df.REQUIREMENTS).is_file()
        )
        text = df.render(df.ImageSpec(name, ref, t.base, t.framework, t.pip, t.apt, requirements))
        old = _read(recipe.dockerfile)
        if old is not None and old != text and not df.unedited(old):
            raise Ds01Error(
                f"{recipe.dockerfile} exists and has your edits; ds01 does not replace it",
                fix=f"Build it as it is with 'ds01 image build {name} --rebuild', or move it "
                "away to start from a new template.",
            )
        self.require_bases(
            [t.base],
            fix="Ask an admin to pull it, or set images.frameworks to the lab's mirror; or "
            "build from an image that is here (docker images) with --from IMAGE.",
        )
        recipe.context.mkdir(parents=True, exist_ok=True)
        notes = []
        if t.requirements is not None:
            target = recipe.context / df.REQUIREMENTS
            if t.requirements.resolve() != target.resolve():
                if target.exists() and recipe.context != Recipe.kept(self.home, name).context:
                    notes.append(f"kept your {target} (not replaced by {t.requirements})")
                else:
                    target.write_bytes(t.requirements.read_bytes())
        if old == text:
            notes.append(f"kept {recipe.dockerfile} (unchanged)")
        else:
            _write(recipe.dockerfile, text)
        return notes

    def build(self, name: str, recipe: Recipe, framework: str | None = None) -> Built:
        """Build the recipe's Dockerfile as it is, tagged as the user's image `name`."""
        ref = image_ref(self.user, name)
        text = _read(recipe.dockerfile)
        if text is None:
            raise UsageError(
                f"no Dockerfile at {recipe.dockerfile}",
                fix=f"Write one, or start from a template: ds01 image build {name} "
                "--framework pytorch",
            )
        self.require_bases(
            df.base_images(text),
            fix=f"Change the FROM line of {recipe.dockerfile} to an image that is here "
            "(docker images), or ask an admin to pull it.",
        )
        try:
            relative = str(recipe.dockerfile.relative_to(recipe.context))
        except ValueError:
            relative = str(recipe.dockerfile)
        from ds01.runtime.userdocker import BuildFailed

        try:
            image_id = self.docker.build(
                str(recipe.context),
                relative,
                ref,
                labels(self.user, name, framework, recipe.dockerfile),
                self.progress,
            )
        except BuildFailed as e:
            raise BuildFailed(
                e.what,
                why="A step of the Dockerfile failed; the build's lines above say which.",
                fix=f"Fix the package name or {recipe.dockerfile}, then build again "
                f"(ds01 image build {name} --rebuild for a Dockerfile you edited).",
            ) from e
        return Built(name, ref, image_id, str(recipe.dockerfile))

    def recipe_of(self, name: str) -> Recipe | None:
        """Where the image `name` was built from: the Dockerfile its label names (when it is
        in the user's home and still there), the kept one, or the project's."""
        data = self.docker.image(image_ref(self.user, name)) or {}
        named = ((data.get("Config") or {}).get("Labels") or {}).get(LABEL_DOCKERFILE)
        candidates = []
        if named:
            path = Path(str(named))
            candidates.append(Recipe(path.parent, path))
        candidates += [Recipe.kept(self.home, name), Recipe.project(self.home / "workspace" / name)]
        for c in candidates:
            if c.dockerfile.is_file() and _mine(c.dockerfile, self.home):
                return c
        return None

    def add(self, name: str, pip: tuple[str, ...], apt: tuple[str, ...]) -> Built:
        """Append package steps to the image's Dockerfile and rebuild; the Dockerfile is put
        back as it was when the build fails."""
        ref = image_ref(self.user, name)
        if not self.exists(ref):
            raise Ds01Error(
                f"you have no image {name!r}",
                fix=f"Build it first: ds01 image build {name} --framework pytorch (ds01 image "
                "list shows yours).",
            )
        recipe = self.recipe_of(name)
        if recipe is None:
            raise Ds01Error(
                f"the Dockerfile of {name!r} is not where ds01 keeps it",
                fix=f"Rebuild it from your Dockerfile: ds01 image build {name} --dockerfile "
                "FILE --rebuild",
            )
        old = recipe.dockerfile.read_text()
        _write(recipe.dockerfile, df.appended(old, pip, apt))
        try:
            built = self.build(name, recipe)
        except BaseException:
            _write(recipe.dockerfile, old)
            raise
        return built


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.ds01-new")
    tmp.write_text(text)
    os.replace(tmp, path)


def _mine(path: Path, home: Path) -> bool:
    try:
        return path.resolve().is_relative_to(home.resolve()) and path.stat().st_uid == os.getuid()
    except OSError:
        return False
