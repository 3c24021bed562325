"""Checks that querying GPUs works for everyone: NVIDIA's nvidia-smi, unshadowed (the incident).

    nvidia-smi.not-shadowed   every nvidia-smi an ordinary user can reach is an ELF; an ELF no
                              package owns WARNs. A wrapper — a script, a link to one, or an
                              alias or function named nvidia-smi in the shell startup files — is
                              judged by what it does (live): run as an ordinary user with a few
                              query arguments, next to NVIDIA's binary behind it with the same
                              arguments as the same user. Same exit status and output, and the
                              binary works: WARN (with its path and first lines). It blocks,
                              filters, changes or fails for that user, or no NVIDIA binary is
                              found behind it, or it cannot be run (under --root): FAIL.
    nvidia-smi.runs-for-user  the nvidia-smi on an ordinary user's PATH runs as that user (live)

The only repair: a *script* named nvidia-smi that FAILs and that no package owns is moved aside
to FILE.ds01-bak.<time> (never deleted); an ELF, or a wrapper that passes through, is never
touched. Must not wrap or run NVIDIA's binary as anything but an ordinary user's query.
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
# The queries a wrapper is judged by: what the allocator and `ds01 gpu inventory` ask, with
# fields that do not change from one call to the next (so two runs can be compared).
PROBES: tuple[tuple[str, ...], ...] = (
    ("-L",),
    ("--query-gpu=index,uuid,name,memory.total,pci.bus_id", "--format=csv,noheader"),
)
PROBE_TIMEOUT_S = 60.0
FIRST_LINES = 5
_PATH_TOKEN = re.compile(r"/[\w.+/-]*nvidia-smi[\w.+-]*")


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
    shadows = _startup_shadows(ctx)
    scripts = [f for f in found if f.kind in ("script", "other", "broken")]
    evidence: list[str] = []
    for f in found:
        evidence.append(_describe(f))
        if f.kind == "script":
            evidence += _first_lines(f.final)
    evidence += [s.text for s in shadows]
    if scripts or shadows:
        return _judge_wrappers(ctx, rid, found, scripts, shadows, evidence)
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


def _first_lines(path: Path) -> list[str]:
    try:
        with path.open("rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return []
    return [f"  {n}: {line[:100]}" for n, line in enumerate(head.splitlines()[:FIRST_LINES], 1)]


def _judge_wrappers(
    ctx: Context,
    rid: str,
    found: list[Found],
    scripts: list[Found],
    shadows: list[Shadow],
    evidence: list[str],
) -> Result:
    """WARN when every wrapper passes the queries through and they work for an ordinary user;
    else FAIL, naming what each one does."""
    names = [f.shown for f in scripts] + [s.where for s in shadows]
    verdicts: list[Verdict] = []
    if ctx.live:
        who = _ordinary_account(ctx)
        for f in scripts:
            reference = _reference(ctx, f.final, found) if f.kind == "script" else None
            verdicts.append(_judge(ctx, who, f.shown, [str(f.path)], reference, {}))
        for shadow in shadows:
            reference = _reference_for_line(ctx, shadow.line, found)
            startup = {"DS01_STARTUP_FILE": str(shadow.path)}
            verdicts.append(_judge(ctx, who, shadow.where, _shell_argv(), reference, startup))
    else:
        evidence.append("not run: a wrapper is judged by running it on the live host (--root)")
    for v in verdicts:
        evidence += v.lines
    if verdicts and all(v.passes for v in verdicts):
        user = verdicts[0].user
        return Result(
            rid,
            Status.WARN,
            f"nvidia-smi is wrapped, but the wrapper passes queries through to NVIDIA's binary "
            f"and works for the ordinary user {user}: {', '.join(names)}",
            evidence,
            "Harmless as it is; ds01 needs no wrapper. Keep it only if it must do something "
            "NVIDIA's binary does not, and never let it refuse or filter queries (the incident "
            "in BRIEF §2 began with such a wrapper).",
        )
    # A script no package is known to own: one dpkg lists is the admin's to remove.
    movable = [
        f for f in scripts if f.kind == "script" and dpkg_owner(ctx, [f.shown]) in (None, "?")
    ]
    movable = [f for f in movable if not any(v.passes and v.name == f.shown for v in verdicts)]

    def repair() -> list[str]:
        lines: list[str] = []
        for f in movable:
            lines += _move_aside(f)
        return lines

    bad = [f"{v.name} {v.does}" for v in verdicts if not v.passes]
    return Result(
        rid,
        Status.FAIL,
        f"nvidia-smi is shadowed by a wrapper: {', '.join(names)}"
        + (f" ({'; '.join(bad)})" if bad else ""),
        evidence,
        "Remove the wrapper so users reach NVIDIA's binary (queries must never be blocked; "
        "compute is controlled by CUDA_VISIBLE_DEVICES and the uvm gate). `ds01 doctor --fix`"
        " moves a script aside; aliases and functions must be deleted by hand.",
        repair if movable else None,
    )


@dataclass(frozen=True)
class Shadow:
    """An alias or function named nvidia-smi in a shell startup file."""

    path: Path  # under the root
    where: str  # "/etc/profile.d/gpu.sh:2"
    line: str

    @property
    def text(self) -> str:
        return f"{self.where}: {self.line.strip()[:80]}"


@dataclass(frozen=True)
class Verdict:
    name: str  # the wrapper, as shown
    user: str
    passes: bool
    does: str  # "blocks queries for alice", …
    lines: list[str]


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Ran:
    rc: int
    out: str
    err: str

    def brief(self) -> str:
        first = (self.err or self.out).strip().splitlines()
        return f"exit {self.rc}" + (f" ({first[0][:80]})" if first else "")


def _ordinary_account(ctx: Context) -> Account | None:
    user = ordinary_user(ctx)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return Account(user, pw.pw_uid, pw.pw_gid, pw.pw_dir or "/")


def _reference(ctx: Context, script: Path, found: list[Found], depth: int = 0) -> Path | None:
    """NVIDIA's binary behind a script: an ELF named nvidia-smi* that it names by absolute path
    (through further scripts), else the first ELF nvidia-smi on the user's PATH."""
    try:
        lines = script.read_text(errors="replace").splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        for token in _PATH_TOKEN.findall(line):
            path = resolve_in_root(ctx.at(token), ctx.root)
            if path is None or path == script:
                continue
            kind, _ = classify(path)
            if kind == "elf":
                return path
            if kind == "script" and depth < 4:
                deeper = _reference(ctx, path, [], depth + 1)
                if deeper is not None:
                    return deeper
    return next((f.final for f in found if f.kind == "elf"), None)


def _reference_for_line(ctx: Context, line: str, found: list[Found]) -> Path | None:
    for token in _PATH_TOKEN.findall(line):
        path = resolve_in_root(ctx.at(token), ctx.root)
        if path is not None and classify(path)[0] == "elf":
            return path
    return next((f.final for f in found if f.kind == "elf"), None)


# An interactive bash that reads only the startup file holding the alias or function, then calls
# `nvidia-smi` the way a user types it (aliases expand only in interactive shells).
_SHELL = 'PS1="$ "\n. "$DS01_STARTUP_FILE" >/dev/null 2>&1\nPATH="$DS01_PATH"\nnvidia-smi "$@"\n'


def _shell_argv() -> list[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return [bash, "--norc", "--noprofile", "-i", "-c", _SHELL, "nvidia-smi"]


def _run_as(ctx: Context, who: Account, argv: list[str], extra: dict[str, str]) -> Ran:
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    ids = [f"--reuid={who.uid}", f"--regid={who.gid}", "--init-groups"]
    path = ":".join(ctx.user_path)
    env = {"PATH": path, "HOME": who.home, "LANG": "C.UTF-8", "DS01_PATH": path, **extra}
    try:
        done = subprocess.run(
            [setpriv, *ids, *argv],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return Ran(-1, "", str(err))
    return Ran(done.returncode, done.stdout, done.stderr)


def _judge(
    ctx: Context,
    who: Account | None,
    name: str,
    argv: list[str],
    reference: Path | None,
    extra: dict[str, str],
) -> Verdict:
    """Run the wrapper (argv) and NVIDIA's binary as `who` with each probe; compare."""
    if who is None:
        user = ordinary_user(ctx)
        why = f"not run: no ordinary user to run it as ('{user}' is unknown)"
        return Verdict(name, user, False, "cannot be judged", [f"{name}: {why}"])
    if reference is None:
        line = f"{name}: no NVIDIA binary found behind it to compare with: cannot be verified"
        return Verdict(name, who.name, False, "has no NVIDIA binary behind it", [line])
    lines: list[str] = []
    does = ""
    works = False  # NVIDIA's binary answered at least one query for this user
    for args in PROBES:
        mine = _run_as(ctx, who, [*argv, *args], extra)
        theirs = _run_as(ctx, who, [str(reference), *args], {})
        works = works or theirs.rc == 0
        shown = " ".join(args)
        ref = f"NVIDIA's {ctx.shown(reference)}"
        if mine.rc == theirs.rc and mine.out == theirs.out:
            outcome = "the same output" if theirs.rc == 0 else theirs.brief()
            lines.append(f"as {who.name}: `{shown}` through {name}: as through {ref}: {outcome}")
        elif mine.rc != 0 and theirs.rc == 0:
            lines.append(f"as {who.name}: `{shown}` through {name}: {mine.brief()}; {ref}: exit 0")
            does = does or f"blocks or fails queries for {who.name}"
        else:
            lines.append(
                f"as {who.name}: `{shown}` through {name}: exit {mine.rc}, "
                f"{len(mine.out.splitlines())} lines; {ref}: exit {theirs.rc}, "
                f"{len(theirs.out.splitlines())} lines: the output differs"
            )
            does = does or f"filters or changes queries for {who.name}"
    if not does and not works:
        does = f"fails for {who.name}, as NVIDIA's binary does (see nvidia-smi.runs-for-user)"
    return Verdict(name, who.name, not does, does, lines)


def _startup_shadows(ctx: Context) -> list[Shadow]:
    files = [ctx.at(p) for p in STARTUP_FILES]
    profile_d = ctx.at("/etc/profile.d")
    if profile_d.is_dir():
        files += sorted(profile_d.glob("*.sh"))
    hits: list[Shadow] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if _SHADOW.match(line):
                hits.append(Shadow(path, f"{ctx.shown(path)}:{number}", line))
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
