"""Checks that querying GPUs works for everyone: NVIDIA's nvidia-smi, unshadowed (the incident).

    nvidia-smi.not-shadowed   every nvidia-smi an ordinary user can reach is an ELF; a script
                              or a link to one (a wrapper) FAILs; an ELF no package owns WARNs;
                              an alias or function named nvidia-smi in the shell startup files FAILs
    nvidia-smi.runs-for-user  the nvidia-smi on an ordinary user's PATH runs as that user (live)

The only repair: a *script* named nvidia-smi that no package owns is moved aside to
FILE.ds01-bak.<time> (never deleted); an ELF is never touched. Must not wrap or run NVIDIA's
binary as anything but an ordinary user's query.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ds01.host.apply import backup_path
from ds01.host.doctor.base import Context, Result, Status
from ds01.host.users import ds01_users

ELF_MAGIC = b"\x7fELF"
NAME = "nvidia-smi"
_SHADOW = re.compile(
    r"^\s*(alias\s+nvidia-smi=|(function\s+)?nvidia-smi\s*\(\s*\)|function\s+nvidia-smi\b)"
)
STARTUP_FILES = ("/etc/profile", "/etc/bash.bashrc", "/etc/environment")


@dataclass(frozen=True)
class Found:
    path: Path  # as found in a PATH directory (under the root)
    shown: str  # the host path, for messages
    final: Path  # after following symlinks (within the root)
    kind: str  # "elf" | "script" | "other" | "broken"
    first_line: str
    owner: str | None  # the dpkg package, None if none, "?" if not checked


def resolve_in_root(path: Path, root: Path) -> Path | None:
    """Follow symlinks of `path`, reading absolute link targets as paths inside `root`."""
    current = path
    for _ in range(40):
        if not current.is_symlink():
            return current if current.exists() else None
        target = os.readlink(current)
        base = root if target.startswith("/") else current.parent
        current = base / target.lstrip("/")
    return None


def classify(path: Path) -> tuple[str, str]:
    try:
        with path.open("rb") as f:
            head = f.read(256)
    except OSError as err:
        return "broken", str(err)
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    if head.startswith(ELF_MAGIC):
        return "elf", ""
    if head.startswith(b"#!"):
        return "script", first
    return "other", first


_MERGED = ("/bin/", "/sbin/", "/lib/")


def _aliases(host_path: str) -> list[str]:
    """The path and its other name on a merged-/usr system (/usr/bin/x ↔ /bin/x): dpkg knows a
    file only by the name its package shipped."""
    names = [host_path]
    for top in _MERGED:
        if host_path.startswith("/usr" + top):
            names.append(host_path.removeprefix("/usr"))
        elif host_path.startswith(top):
            names.append("/usr" + host_path)
    return names


def dpkg_owner(ctx: Context, host_paths: list[str]) -> str | None:
    """The package owning any of `host_paths` ("?" when it cannot be checked)."""
    admindir = ctx.at("/var/lib/dpkg")
    if not (admindir / "status").exists():
        return "?"
    for host_path in [a for p in host_paths for a in _aliases(p)]:
        try:
            done = subprocess.run(
                ["dpkg-query", f"--admindir={admindir}", "-S", host_path],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        if done.returncode == 0 and ":" in done.stdout:
            return done.stdout.split(":", 1)[0].strip()
    return None


def find_all(ctx: Context) -> list[Found]:
    found: list[Found] = []
    seen: set[tuple[int, int]] = set()
    for directory in ctx.user_path:
        path = ctx.at(directory) / NAME
        try:
            st = path.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        final = resolve_in_root(path, ctx.root)
        shown = f"{directory}/{NAME}"
        if final is None:
            found.append(Found(path, shown, path, "broken", "dangling symlink", None))
            continue
        kind, first = classify(final)
        host_final = ctx.shown(final)
        owner = dpkg_owner(ctx, [shown, host_final]) if kind == "elf" else None
        found.append(Found(path, shown, final, kind, first, owner))
    return found


def _describe(f: Found) -> str:
    link = f" -> {f.final}" if f.path.is_symlink() else ""
    if f.kind == "elf":
        owner = {None: "owned by no package", "?": "package not checked"}.get(
            f.owner, f"package {f.owner}"
        )
        return f"{f.shown}{link}: ELF executable, {owner}"
    if f.kind == "script":
        return f"{f.shown}{link}: script ({f.first_line[:60]})"
    return f"{f.shown}{link}: {f.kind} ({f.first_line[:60]})"


def _move_aside(f: Found) -> list[str]:
    backup = backup_path(f.path)
    os.rename(f.path, backup)
    return [f"moved {f.shown} aside to {backup.name} (it was a script shadowing nvidia-smi)"]


def check_not_shadowed(ctx: Context) -> Result:
    rid = "nvidia-smi.not-shadowed"
    found = find_all(ctx)
    evidence = [_describe(f) for f in found]
    shadows = _startup_shadows(ctx)
    evidence += shadows
    scripts = [f for f in found if f.kind in ("script", "other", "broken")]
    if scripts or shadows:
        # A script no package is known to own: one dpkg lists is the admin's to remove.
        movable = [
            f for f in scripts if f.kind == "script" and dpkg_owner(ctx, [f.shown]) in (None, "?")
        ]

        def repair() -> list[str]:
            lines: list[str] = []
            for f in movable:
                lines += _move_aside(f)
            return lines

        names = ", ".join([f.shown for f in scripts] + [s.split(":", 1)[0] for s in shadows])
        return Result(
            rid,
            Status.FAIL,
            f"nvidia-smi is shadowed by a wrapper: {names}",
            evidence,
            "Remove the wrapper so users reach NVIDIA's binary (queries must never be blocked; "
            "compute is controlled by CUDA_VISIBLE_DEVICES and the uvm gate). `ds01 doctor --fix`"
            " moves a script aside; aliases and functions must be deleted by hand.",
            repair if movable else None,
        )
    if not found:
        return Result(
            rid,
            Status.WARN,
            "no nvidia-smi on an ordinary user's PATH",
            [f"searched {', '.join(ctx.user_path)}"],
            "Install the NVIDIA driver utilities (nvidia-smi comes with the driver).",
        )
    strays = [f for f in found if f.owner is None]
    if strays:
        return Result(
            rid,
            Status.WARN,
            "an nvidia-smi binary belongs to no package: " + ", ".join(f.shown for f in strays),
            evidence,
            "Check where it came from; a driver installed with NVIDIA's .run installer is not "
            "known to dpkg and is fine; anything else should be removed.",
        )
    return Result(rid, Status.PASS, "nvidia-smi is NVIDIA's binary, not shadowed", evidence)


def _startup_shadows(ctx: Context) -> list[str]:
    files = [ctx.at(p) for p in STARTUP_FILES]
    profile_d = ctx.at("/etc/profile.d")
    if profile_d.is_dir():
        files += sorted(profile_d.glob("*.sh"))
    hits: list[str] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if _SHADOW.match(line):
                hits.append(f"{ctx.shown(path)}:{number}: {line.strip()[:80]}")
    return hits


def ordinary_user(ctx: Context) -> str:
    """A ds01 user who is not exempt (the kind of user the incident locked out), else nobody."""
    if ctx.config is not None:
        people = ds01_users(ctx.config).present
        for name in people:
            if not ctx.config.is_exempt(name):
                return name
        if people:
            return people[0]
    return "nobody"


def check_runs_for_user(ctx: Context) -> Result:
    rid = "nvidia-smi.runs-for-user"
    if not ctx.live:
        return Result(rid, Status.SKIP, "needs the live host (--root is set)")
    found = find_all(ctx)
    if not found:
        return Result(rid, Status.SKIP, "no nvidia-smi to run (see nvidia-smi.not-shadowed)")
    user = ordinary_user(ctx)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return Result(rid, Status.SKIP, f"no ordinary user to run it as ('{user}' is unknown)")
    first = found[0]
    argv = [
        shutil.which("setpriv") or "/usr/bin/setpriv",
        f"--reuid={pw.pw_uid}",
        f"--regid={pw.pw_gid}",
        "--init-groups",
        "nvidia-smi",
        "-L",
    ]
    env = {"PATH": ":".join(ctx.user_path), "HOME": pw.pw_dir, "LANG": "C.UTF-8"}
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return Result(rid, Status.FAIL, f"nvidia-smi did not run for {user}: {err}")
    output = (done.stdout + done.stderr).strip().splitlines()
    evidence = [f"as {user}: {first.shown} -L → exit {done.returncode}", *output[:5]]
    if done.returncode != 0:
        return Result(
            rid,
            Status.FAIL,
            f"nvidia-smi fails for the ordinary user {user}",
            evidence,
            "Queries must work for every user: check nvidia-smi.not-shadowed and devices.mode.",
        )
    return Result(rid, Status.PASS, f"nvidia-smi runs for the ordinary user {user}", evidence)
