"""Helpers shared by the tests/host modules: run the real `ds01`, snapshot a directory tree,
and put back real host files a test installed into (back up bytes and mode; remove what was
added)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

DS01 = str(Path(sys.executable).parent / "ds01")


def ds01(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("DS01_") and k != "DOCKER_HOST"
    }
    clean["COLUMNS"] = "200"
    clean.update(env or {})
    return subprocess.run(
        [DS01, *args], capture_output=True, text=True, env=clean, timeout=120, check=False
    )


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file (and symlink) under `root`: relative path → (content, mode)."""
    out: dict[str, tuple[bytes, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = (os.readlink(path).encode(), 0o777)
        elif path.is_file():
            out[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


@dataclass
class HostFiles:
    """Backs up real host files before a test writes them, and puts them back afterwards:
    original bytes and mode restored, files that did not exist removed, and every
    FILE.ds01-bak.* made meanwhile next to them deleted."""

    paths: list[Path]
    saved: dict[Path, tuple[bytes, int] | None] = field(default_factory=dict)
    backups_before: set[Path] = field(default_factory=set)
    dirs_created: list[Path] = field(default_factory=list)

    def __enter__(self) -> HostFiles:
        for path in self.paths:
            if path.exists():
                self.saved[path] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
            else:
                self.saved[path] = None
                missing = path.parent
                while not missing.exists():
                    self.dirs_created.append(missing)
                    missing = missing.parent
            self.backups_before |= set(path.parent.glob(f"{path.name}.ds01-bak.*"))
        return self

    def __exit__(self, *exc: object) -> None:
        for path, saved in self.saved.items():
            if saved is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(saved[0])
                path.chmod(saved[1])
            if path.parent.exists():
                for backup in path.parent.glob(f"{path.name}.ds01-bak.*"):
                    if backup not in self.backups_before:
                        backup.unlink()
        for directory in sorted(set(self.dirs_created), key=lambda p: len(p.parts), reverse=True):
            if directory.exists() and not any(directory.iterdir()):
                directory.rmdir()
