"""`ds01 project init`: the files of a new project, each written only where none is — a second
run adds what is missing and keeps every file there is, ds01's own Dockerfile too (its packages
may be an earlier run's --pip). Says what it created and kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ds01.images import dockerfile as df
from ds01.images.build import Template
from ds01.projects import settings

FOLDERS = ("data", "models", "notebooks", "src")
# What ML projects should not commit: data and weights (kept out of the image's build context
# too, .dockerignore), notebook checkpoints, caches, secrets.
GITIGNORE = """\
# Data and trained models stay out of git (keep them in data/ and models/).
data/*
!data/.gitkeep
models/*
!models/.gitkeep
*.ckpt
*.pt
*.pth
*.safetensors
*.h5
*.onnx
# Experiment logs
runs/
wandb/
mlruns/
lightning_logs/
# Python and Jupyter
__pycache__/
*.py[cod]
.ipynb_checkpoints/
.venv/
venv/
*.egg-info/
.pytest_cache/
# Secrets
.env
"""
DOCKERIGNORE = """\
# Only what the Dockerfile copies needs to reach the builder; data and models are mounted.
data/
models/
notebooks/
.git/
.devcontainer/
**/__pycache__
**/.ipynb_checkpoints
"""
REQUIREMENTS = """\
# Python packages for this project, one per line (e.g. numpy, transformers>=4.40).
# After a change: ds01 image build {name} --rebuild (or ds01 image add {name} PKG).
"""


def readme(name: str) -> str:
    return f"""\
# {name}

A ds01 project: it runs in a container on the lab's GPU server.

    ds01 project launch {name}     # build the image (first time) and start the container
    ds01 container shell {name}    # a shell inside it; this folder is /workspace
    ds01 container stop {name}     # done for now (ds01 container retire {name}: remove it)

- `src/` your code, `notebooks/` notebooks, `data/` and `models/` data and weights
  (not committed to git).
- `requirements.txt` and `Dockerfile`: the image's packages. After a change:
  `ds01 image build {name} --rebuild`, then `ds01 container retire {name}` and launch again.
- `pyproject.toml`, `[tool.ds01]`: the image and how many GPUs the container gets.
- `.devcontainer/devcontainer.json`: open this folder in VS Code (Dev Containers:
  Reopen in Container) after the first launch has built the image.
"""


def devcontainer(name: str, image: str, gpus: int) -> str:
    config: dict[str, object] = {
        "name": name,
        "image": image,
        "remoteUser": df.DEV_USER,
        "updateRemoteUserUID": True,
    }
    if gpus > 0:
        config["runArgs"] = ["--gpus", str(gpus)]
    body = json.dumps(config, indent=4)
    return (
        "// VS Code Dev Containers for this project (docs/devcontainers.md).\n"
        f"// The image is built by `ds01 project launch {name}` (or ds01 image build).\n"
        "// remoteUser vscode gets your uid (updateRemoteUserUID), so the gate lets it run;\n"
        "// runArgs --gpus asks ds01 for GPUs as [tool.ds01] gpus does.\n"
        f"{body}\n"
    )


@dataclass
class Report:
    path: Path
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "created": self.created,
            "kept": self.kept,
            "notes": self.notes,
        }


def init(folder: Path, name: str, image: str, template: Template, gpus: int) -> Report:
    report = Report(folder)
    if not folder.exists():
        folder.mkdir(parents=True)
        report.created.append(f"{folder}/")
    elif not folder.is_dir():
        raise FileExistsError(folder)

    def write(rel: str, text: str) -> None:
        path = folder / rel
        if path.exists() or path.is_symlink():
            report.kept.append(rel)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        report.created.append(rel)

    for sub in FOLDERS:
        if not (folder / sub).is_dir():
            (folder / sub).mkdir()
            report.created.append(f"{sub}/")
    for sub in ("data", "models", "notebooks"):
        marker = folder / sub / ".gitkeep"
        if not marker.exists():
            marker.touch()
    write("README.md", readme(name))
    write(".gitignore", GITIGNORE)
    write(".dockerignore", DOCKERIGNORE)
    req = folder / df.REQUIREMENTS
    if template.requirements is not None and not req.exists():
        shutil.copyfile(template.requirements, req)
        report.created.append(f"{df.REQUIREMENTS} (from {template.requirements})")
    else:
        if template.requirements is not None:
            report.notes.append(f"kept your {df.REQUIREMENTS}; {template.requirements} not copied")
        write(df.REQUIREMENTS, REQUIREMENTS.format(name=name))
    _pyproject(folder, name, image, template, gpus, report)
    _dockerfile(folder, name, image, template, report)
    write(".devcontainer/devcontainer.json", devcontainer(name, image, gpus))
    _git(folder, report)
    return report


def _pyproject(
    folder: Path, name: str, image: str, template: Template, gpus: int, report: Report
) -> None:
    path = folder / settings.PYPROJECT
    table = settings.table_text(image, template.framework, gpus)
    if not path.exists():
        path.write_text(
            f'[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n\n{table}'
        )
        report.created.append(settings.PYPROJECT)
        return
    text = path.read_text()
    if settings.has_table(text):
        report.kept.append(f"{settings.PYPROJECT} (its [tool.ds01] table)")
        return
    import tomllib

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        report.notes.append(f"{settings.PYPROJECT} is not valid TOML: [tool.ds01] not added")
        return
    path.write_text(text + ("" if text.endswith("\n") else "\n") + "\n" + table)
    report.created.append(f"{settings.PYPROJECT}: [tool.ds01] (the rest kept)")


def _dockerfile(folder: Path, name: str, image: str, template: Template, report: Report) -> None:
    path = folder / "Dockerfile"
    text = df.render(
        df.ImageSpec(
            name, image, template.base, template.framework, template.pip, template.apt, True
        )
    )
    if path.exists() or path.is_symlink():
        # Its packages may have come from an earlier init's --pip: a re-run keeps them.
        report.kept.append("Dockerfile")
        if template.pip or template.apt:
            report.notes.append(
                f"--pip/--apt not added: the Dockerfile exists (edit it, or after a launch: "
                f"ds01 image add {name} PKG)"
            )
        return
    path.write_text(text)
    report.created.append("Dockerfile")


def _git(folder: Path, report: Report) -> None:
    if (folder / ".git").exists():
        report.kept.append(".git/")
        return
    git = shutil.which("git")
    if git is None:
        report.notes.append("git is not installed: run 'git init' yourself later")
        return
    r = subprocess.run(
        [git, "init", "--quiet", str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        check=False,
    )
    if r.returncode == 0:
        report.created.append(".git/ (git init)")
    else:
        report.notes.append(f"git init failed: {r.stderr.strip()}")
