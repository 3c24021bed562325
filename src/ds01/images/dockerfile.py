"""The Dockerfile `ds01 image build` writes for a user, and the few things ds01 reads back from
one: its base images, whether the user has edited it, packages appended by `ds01 image add`.

The text is meant to be read by someone who has never written a Dockerfile: one commented
step per kind of package. Package names are checked (packages.py) and single-quoted, so none
can add an instruction or reach the shell. Must not touch files or Docker (see store.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# ds01 may replace a file it wrote while this line still matches the rest of the file; any
# edit makes it the user's, and ds01 then only appends (`image add`) or builds it as it is.
_MARK = "# ds01-rendered "
_MARK_LINE = re.compile(r"# ds01-rendered ([0-9a-f]{16})\n")
REQUIREMENTS = "requirements.txt"
# The user VS Code Dev Containers run tools as (docs/devcontainers.md); the Dev Containers CLI
# gives it the caller's uid when it opens the project.
DEV_USER = "vscode"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    ref: str  # ds01-<user>/<name>:latest
    base: str
    framework: str | None  # None: --from IMAGE
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    requirements: bool = False  # a requirements.txt next to the Dockerfile


def _quoted(names: tuple[str, ...]) -> str:
    return " \\\n".join(f"        '{n}'" for n in names)


def pip_step(names: tuple[str, ...]) -> str:
    return f"RUN pip install --no-cache-dir \\\n{_quoted(names)}\n"


def apt_step(names: tuple[str, ...]) -> str:
    return (
        "RUN apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\\n"
        f"{_quoted(names)} \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
    )


def render(spec: ImageSpec) -> str:
    """The Dockerfile of `spec`, with ds01's mark on its second line."""
    where = (
        f"the lab's {spec.framework} image (config: images.frameworks.{spec.framework})"
        if spec.framework
        else "the image given with --from"
    )
    parts = [f"# Base: {where}.\nFROM {spec.base}\n"]
    if spec.apt:
        parts.append(
            "# System packages (Debian/Ubuntu), installed as root at build time.\n"
            + apt_step(spec.apt)
        )
    if spec.requirements:
        parts.append(
            f"# Python packages from {REQUIREMENTS} (next to this file).\n"
            f"COPY {REQUIREMENTS} /tmp/ds01-requirements.txt\n"
            "RUN pip install --no-cache-dir -r /tmp/ds01-requirements.txt\n"
        )
    if spec.pip:
        parts.append("# Python packages named with --pip.\n" + pip_step(spec.pip))
    parts.append(
        f'# A non-root user for VS Code Dev Containers (remoteUser "{DEV_USER}"). ds01 runs\n'
        "# your containers as you, so packages are installed above, as root, at build time.\n"
        f"RUN id -u {DEV_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "
        f"{DEV_USER}\n"
    )
    parts.append("# Your project is mounted here by `ds01 project launch`.\nWORKDIR /workspace\n")
    body = "\n".join(parts)
    head = (
        f"# Dockerfile of the ds01 image {spec.name!r} ({spec.ref}), written by ds01.\n"
        "# It is yours to edit: `ds01 image build "
        f"{spec.name} --rebuild` builds it again as it is;\n"
        f"# `ds01 image add {spec.name} PKG...` appends packages at the end and rebuilds.\n"
    )
    return f"{head}{_MARK}{_digest(body)}\n{body}"


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def unedited(text: str) -> bool:
    """Whether `text` is a Dockerfile ds01 wrote that nobody has changed since."""
    m = _MARK_LINE.search(text)
    return m is not None and _digest(text[m.end() :]) == m.group(1)


def appended(text: str, pip: tuple[str, ...], apt: tuple[str, ...]) -> str:
    """`text` with steps installing more packages at its end (`ds01 image add`): the layers
    before stay as they were, so the rebuild reuses them."""
    out = text if text.endswith("\n") else text + "\n"
    if apt:
        out += "\n# Added by `ds01 image add`.\n" + apt_step(apt)
    if pip:
        out += "\n# Added by `ds01 image add`.\n" + pip_step(pip)
    return out


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments and
    blank lines skipped — enough of Docker's parser to read FROM lines and to check that
    rendered text has no instruction ds01 did not write."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    if current.strip():
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def base_images(text: str) -> list[str]:
    """The images the Dockerfile's FROM lines name, in order: not earlier stages (FROM x AS
    y ... FROM y), not `scratch`, not references with a variable (ARG: unknown here)."""
    stages: set[str] = set()
    out: list[str] = []
    for word, rest in instructions(text):
        if word != "FROM":
            continue
        args = [a for a in rest.split() if not a.startswith("--")]
        if not args:
            continue
        image = args[0]
        if len(args) >= 3 and args[1].lower() == "as":
            stages.add(args[2].lower())
        if image.lower() in stages or image == "scratch" or "$" in image:
            continue
        out.append(image)
    return out
