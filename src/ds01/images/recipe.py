"""Where a user's image is made from, and what ds01 calls it: the tag `ds01-<user>/<name>:latest`
(the user part from identity.sanitize_username, like every other name ds01 derives), the
labels ds01 puts on it, and the folder its Dockerfile is kept in — the project's folder, or
`~/.config/ds01/dockerfiles/<name>/` for an image of its own.

The labels are a display copy (whose Dockerfile, which framework): what an image is and whose
it is comes from the gate's owner records. They are not `ds01.*` labels: those are ds01's own
and the gate refuses them in users' builds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ds01.errors import UsageError
from ds01.identity import sanitize_username

# One path component of a Docker repository name (lower case; '.', '_', '-' between parts);
# also a valid ds01 container name, so a project's image and container share its name.
_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
# An image reference as a user types it (name, tag, digest): what --from and [tool.ds01] image
# may hold. The engine judges the rest; this keeps spaces, quotes and shell text out.
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
IMAGE_REF = re.compile(
    rf"(?:{_HOST}(?:\.{_HOST})*(?::[0-9]+)?/)?{_PART}(?:/{_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
LABEL_NAME = "ds01-image.name"
LABEL_USER = "ds01-image.user"
LABEL_FRAMEWORK = "ds01-image.framework"
LABEL_DOCKERFILE = "ds01-image.dockerfile"
# The field the gate adds to each image of a GET /images/json reply: its recorded owner, ""
# for a shared image (gate/policy/images.py listing; docker clients ignore it).
OWNER_FIELD = "Ds01Owner"


def check_name(name: str, what: str = "image") -> str:
    if _NAME.fullmatch(name) and len(name) <= 63:
        return name
    raise UsageError(
        f"invalid {what} name {name!r}",
        why="Names are 1-63 lower-case letters and digits, with '.', '_' or '-' between them.",
        fix="Pick a name such as 'thesis' or 'exp-2'.",
    )


def image_ref(user: str, name: str) -> str:
    return f"ds01-{sanitize_username(user)}/{check_name(name)}:latest"


def namespace(user: str) -> str:
    return f"ds01-{sanitize_username(user)}/"


# A sanitised name that was changed carries '_' and 8 hex digits (identity.sanitize_username).
_HASHED = re.compile(r"[a-z0-9_]+_[0-9a-f]{8}")


def namespace_owner(repo_path: str) -> str | None:
    """The sanitised user part of a repository path `ds01-<user>/…` that may be a user's
    namespace (a hashed name, or a plain [a-z0-9] one — an account when NSS knows it); None
    for any other path."""
    first, sep, _rest = repo_path.partition("/")
    part = first.removeprefix("ds01-")
    if not sep or part == first or not part:
        return None
    return part if _HASHED.fullmatch(part) or part.isalnum() else None


def is_hashed(part: str) -> bool:
    return _HASHED.fullmatch(part) is not None


def config_home(home: Path) -> Path:
    value = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if value.startswith("/") else home / ".config"


def dockerfiles_dir(home: Path) -> Path:
    return config_home(home) / "ds01" / "dockerfiles"


@dataclass(frozen=True)
class Recipe:
    """A Dockerfile and the folder it is built in (the build context)."""

    context: Path
    dockerfile: Path

    @classmethod
    def kept(cls, home: Path, name: str) -> Recipe:
        folder = dockerfiles_dir(home) / name
        return cls(folder, folder / "Dockerfile")

    @classmethod
    def project(cls, folder: Path) -> Recipe:
        return cls(folder, folder / "Dockerfile")


def labels(user: str, name: str, framework: str | None, dockerfile: Path) -> dict[str, str]:
    out = {
        LABEL_NAME: name,
        LABEL_USER: user,
        LABEL_DOCKERFILE: str(dockerfile),
        "org.opencontainers.image.title": name,
    }
    if framework:
        out[LABEL_FRAMEWORK] = framework
    return out
