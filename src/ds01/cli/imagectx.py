"""What `ds01 image` and `ds01 project` share: the caller, the lab's framework images, and an
Images (images/build.py) on the caller's Docker access — the gate socket of the ds01 that
--run-dir names (the engine ds01d deploys from), reached from the caller's own process."""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ds01.cli.context import globals_of

if TYPE_CHECKING:
    from ds01.images.build import Images


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def framework_bases(ctx: typer.Context) -> dict[str, str]:
    """The lab's framework images (config images.frameworks over the built-in ones). A config
    file this user may not read gives the built-in ones; a broken one is an error."""
    from ds01.config import load_config
    from ds01.config.schema import BUILTIN_FRAMEWORKS

    path = globals_of(ctx).paths().config
    if not os.access(path, os.R_OK):
        return dict(BUILTIN_FRAMEWORKS)
    return load_config(path).images.framework_bases()


def progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def images_of(ctx: typer.Context, quiet: bool = False) -> Images:
    from ds01.images.build import Images
    from ds01.runtime.userdocker import UserDocker

    gate = globals_of(ctx).paths().gate_socket
    docker = UserDocker(
        f"unix://{gate}",
        fix_unreachable="Is ds01d running (ds01 doctor)? Try again in a minute, or tell an admin.",
    )
    return Images(docker, me(), Path.home(), (lambda _t: None) if quiet else progress)
