"""Checks of layer 1: CUDA_VISIBLE_DEVICES="" in every login path, DOCKER_HOST to the gate.

    profile.current       the profile script and the bash.bashrc / pam_env.conf blocks are what
                          apply writes
    profile.pam-env       the PAM stacks of sshd, login, su and su-l run pam_env (so every session
                          starts hidden) and sshd uses PAM
    profile.cuda-hidden   a non-exempt user's real login shell gets CUDA_VISIBLE_DEVICES="" (live)
    profile.cuda-exempt   an exempt user's does not (live)
    profile.cuda-granted  a user with a live grant's does not (live)
    profile.docker-host   a gate-group member's DOCKER_HOST is the ds01 gate socket (live)

Login shells are started for real (`su - USER`), never simulated. Users come from the config
and the host-access file; a check without a suitable user is skipped and says why.
"""

from __future__ import annotations

import glob
import pwd
from pathlib import Path

from ds01.host import hostaccess
from ds01.host.doctor.base import Context, Result, Status, is_root
from ds01.host.doctor.files import files_current
from ds01.host.users import ds01_users
from ds01.identity import unix_groups

# How people log in or switch users. Not sudo: Debian 12's sudo stack has no pam_env, `sudo -i`
# is covered by the profile script, and plain `sudo -u USER cmd` is an admin's action.
PAM_SERVICES = ("sshd", "login", "su", "su-l")
_SKIP_NO_CONFIG = "config invalid (see config.valid)"
_LIVE_ONLY = "needs the live host (--root is set)"


def check_current(ctx: Context) -> Result:
    return files_current(
        ctx, "profile.current", "profile", "the profile script and its bash.bashrc/PAM blocks"
    )


# ---- PAM and sshd -------------------------------------------------------------------------------


def _pam_has_env(ctx: Context, service: str, depth: int = 0) -> bool | None:
    """Whether the PAM service's session stack runs pam_env (None: no such service file)."""
    path = ctx.at(f"/etc/pam.d/{service}")
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "@include" and len(words) > 1 and depth < 8:
            if _pam_has_env(ctx, words[1], depth + 1):
                return True
            continue
        kind = words[0].lstrip("-")
        if kind != "session" or len(words) < 3:
            continue
        if words[1] in ("include", "substack") and depth < 8:
            if _pam_has_env(ctx, words[2], depth + 1):
                return True
        elif words[2].endswith("pam_env.so") and not any(w.startswith("conffile=") for w in words):
            return True
    return False


def _sshd_use_pam(ctx: Context) -> str | None:
    """sshd's UsePAM ('yes'/'no'; first value wins, Include expanded), or None without sshd."""
    main = ctx.at("/etc/ssh/sshd_config")
    if not main.exists():
        return None

    def scan(path: Path, depth: int) -> str | None:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for raw in lines:
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            key = words[0].lower()
            if key == "include" and depth < 8:
                for given in words[1:]:
                    pattern = given if given.startswith("/") else f"/etc/ssh/{given}"
                    for inc in sorted(glob.glob(str(ctx.at(pattern)))):
                        found = scan(Path(inc), depth + 1)
                        if found is not None:
                            return found
            elif key == "usepam" and len(words) > 1:
                return words[1].lower()
            elif key == "match":
                return None  # UsePAM is not allowed inside Match blocks
        return None

    return scan(main, 0) or "no"


def check_pam_env(ctx: Context) -> Result:
    rid = "profile.pam-env"
    evidence: list[str] = []
    missing: list[str] = []
    for service in PAM_SERVICES:
        has = _pam_has_env(ctx, service)
        if has is None:
            continue
        evidence.append(f"/etc/pam.d/{service}: {'runs pam_env' if has else 'no pam_env'}")
        if not has:
            missing.append(service)
    use_pam = _sshd_use_pam(ctx)
    if not evidence and use_pam is None:
        return Result(rid, Status.SKIP, f"no PAM or sshd configuration under {ctx.root}")
    if use_pam is not None:
        evidence.append(f"sshd UsePAM {use_pam}")
    if use_pam == "no":
        missing.append("sshd (UsePAM no)")
    if not missing:
        return Result(rid, Status.PASS, "every login service runs pam_env (fail closed)", evidence)
    return Result(
        rid,
        Status.WARN,
        "sessions of " + ", ".join(missing) + " do not start with host CUDA hidden",
        evidence,
        "Add `session required pam_env.so` to those PAM services (Debian's default) and set "
        "`UsePAM yes` for sshd; until then only the profile script hides CUDA there.",
    )


# ---- real login shells --------------------------------------------------------------------


def can_log_in(user: str) -> bool:
    """Whether the account has a shell one can log in with (not nologin/false)."""
    try:
        shell = pwd.getpwnam(user).pw_shell
    except KeyError:
        return False
    return bool(shell) and not shell.endswith(("/nologin", "/false"))


def _access(ctx: Context) -> dict[str, hostaccess.Entry]:
    try:
        text = ctx.at(ctx.paths.run_dir / hostaccess.FILE_NAME).read_text()
    except OSError:
        return {}
    return hostaccess.allowed_users(hostaccess.parse(text), ctx.now)


def _shell(ctx: Context, rid: str, user: str, want_hidden: bool, who: str) -> Result:
    if not is_root():
        return Result(rid, Status.SKIP, "starting another user's login shell needs root")
    seen = ctx.login_env(user)
    if isinstance(seen, str):
        return Result(
            rid,
            Status.FAIL,
            f"no login shell for {who} {user}",
            [seen],
            f"Check that {user} has a valid login shell (getent passwd {user}).",
        )
    cuda = seen[0]
    shown = "[unset]" if cuda == "unset" else f"[{cuda}]"
    evidence = [f"su - {user}: CUDA_VISIBLE_DEVICES={shown}"]
    hidden = cuda == ""
    if hidden == want_hidden:
        state = 'CUDA_VISIBLE_DEVICES=""' if hidden else "host GPUs visible"
        return Result(rid, Status.PASS, f"{who} {user}: {state}", evidence)
    if want_hidden:
        return Result(
            rid,
            Status.FAIL,
            f"{who} {user} can compute on the host GPUs outside containers",
            evidence,
            "Run `ds01 host apply --only profile` (see profile.current and profile.pam-env).",
        )
    in_file = user in _access(ctx)
    evidence.append(f"{user} {'is' if in_file else 'is not'} allowed in the host-access file")
    return Result(
        rid,
        Status.FAIL,
        f"{who} {user} gets CUDA_VISIBLE_DEVICES hidden",
        evidence,
        "Check daemon.host-access (ds01d writes the file; `ds01 host apply` seeds it) and "
        "profile.current.",
    )


def check_cuda_hidden(ctx: Context) -> Result:
    rid = "profile.cuda-hidden"
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    allowed = _access(ctx)
    for user in ds01_users(ctx.config).present:
        if not ctx.config.is_exempt(user) and user not in allowed and can_log_in(user):
            return _shell(ctx, rid, user, True, "non-exempt user")
    return Result(
        rid, Status.SKIP, "no ds01 user with a login shell, without exemption or grant, to try"
    )


def check_cuda_exempt(ctx: Context) -> Result:
    rid = "profile.cuda-exempt"
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    for user in ctx.config.exempt_users:
        if can_log_in(user):
            return _shell(ctx, rid, user, False, "exempt user")
    return Result(rid, Status.SKIP, "no exempt user with a login shell exists on this host")


def check_cuda_granted(ctx: Context) -> Result:
    rid = "profile.cuda-granted"
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    for user, entry in _access(ctx).items():
        if entry.kind == "grant" and can_log_in(user):
            return _shell(ctx, rid, user, False, "granted user")
    return Result(rid, Status.SKIP, "no live bare-metal grant in the host-access file")


def check_docker_host(ctx: Context) -> Result:
    rid = "profile.docker-host"
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    gate_group = ctx.config.host.gate_group
    want = f"unix://{ctx.paths.run_dir / 'docker.sock'}"
    for user in ds01_users(ctx.config).present:
        if gate_group not in unix_groups(user) or not can_log_in(user):
            continue
        if not is_root():
            return Result(rid, Status.SKIP, "starting another user's login shell needs root")
        seen = ctx.login_env(user)
        if isinstance(seen, str):
            return Result(rid, Status.FAIL, f"no login shell for {user}", [seen])
        evidence = [f"su - {user}: DOCKER_HOST={seen[1]}"]
        if seen[1] == want:
            summary = f"DOCKER_HOST points at the ds01 gate ({want})"
            return Result(rid, Status.PASS, summary, evidence)
        return Result(
            rid,
            Status.FAIL if seen[1] == "unset" else Status.WARN,
            f"{user}'s DOCKER_HOST is not the ds01 gate {want}",
            evidence,
            "Run `ds01 host apply --only profile`; a user's own DOCKER_HOST (set in ~/.profile or "
            "~/.bashrc) wins over ds01's.",
        )
    return Result(rid, Status.SKIP, f"no ds01 user is in the gate group '{gate_group}'")
