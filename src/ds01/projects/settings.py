"""The `[tool.ds01]` table of a project's pyproject.toml: which image it runs in, the GPUs it
asks for, extra host directories. Read with the standard library's TOML parser; a wrong value
is an error naming the file and the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ds01.errors import UsageError
from ds01.images.recipe import IMAGE_REF

PYPROJECT = "pyproject.toml"


@dataclass(frozen=True)
class ProjectSettings:
    image: str
    gpus: int  # whole GPUs; 0: CPU only
    mig: tuple[str, ...]  # MIG profiles instead of whole GPUs (launch only)
    mounts: tuple[str, ...]  # host directories, read-only at /data/NAME
    framework: str | None


def table_text(image: str, framework: str | None, gpus: int) -> str:
    fw = f'framework = "{framework}"\n' if framework else ""
    return (
        "[tool.ds01]\n"
        "# The image `ds01 project launch` runs; it builds it from ./Dockerfile when missing.\n"
        f'image = "{image}"\n'
        f"{fw}"
        "# Whole GPUs for the container (0: CPU only), within your quota (ds01 quota).\n"
        '# Or MIG slices instead: mig = ["3g.40gb"]\n'
        f"gpus = {gpus}\n"
        '# Host directories mounted read-only at /data/<name>, e.g. ["/srv/datasets/imagenet"]\n'
        "mounts = []\n"
    )


def has_table(text: str) -> bool:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return isinstance(data.get("tool"), dict) and "ds01" in data["tool"]


def read(folder: Path) -> ProjectSettings:
    path = folder / PYPROJECT
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"{folder} is not a ds01 project (no {PYPROJECT})",
            fix=f"Create it with: ds01 project init {folder.name}",
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML ({e})", fix="Fix the file.") from None
    table = (data.get("tool") or {}).get("ds01")
    if not isinstance(table, dict):
        raise UsageError(
            f"{path} has no [tool.ds01] table",
            fix=f"Run 'ds01 project init {folder.name}' in it to add one (nothing is replaced).",
        )

    def bad(key: str, want: str) -> UsageError:
        return UsageError(
            f"{path}: [tool.ds01] {key} = {table.get(key)!r}", why=f"Expected {want}."
        )

    image = table.get("image")
    if not isinstance(image, str) or not IMAGE_REF.fullmatch(image):
        raise bad("image", "an image name such as ds01-you/project:latest")
    gpus = table.get("gpus", 1)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= 64:
        raise bad("gpus", "a number of whole GPUs, 0 for CPU only")
    mig = table.get("mig", [])
    if isinstance(mig, str):
        mig = [mig]
    if not isinstance(mig, list) or not all(isinstance(m, str) and m for m in mig):
        raise bad("mig", 'a list of MIG profiles such as ["3g.40gb"]')
    mounts = table.get("mounts", [])
    if not isinstance(mounts, list) or not all(
        isinstance(m, str) and m.startswith("/") for m in mounts
    ):
        raise bad("mounts", 'a list of absolute host directories, e.g. ["/srv/datasets/x"]')
    framework = table.get("framework")
    return ProjectSettings(
        image, gpus, tuple(mig), tuple(mounts), framework if isinstance(framework, str) else None
    )
