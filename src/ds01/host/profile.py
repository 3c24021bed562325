"""Layer 1 (BRIEF §2): the texts that put CUDA_VISIBLE_DEVICES="" into every login path.

Design (docs/host-access.md explains it for admins):

1. PAM, fail closed. A block in /etc/security/pam_env.conf makes pam_env set
   CUDA_VISIBLE_DEVICES="" and DS01_GPU_HIDDEN=1 in *every* PAM session (sshd, su, su -, sudo,
   login, cron) before any shell starts, and BASH_ENV=<profile script>.
2. One decision script, /etc/profile.d/ds01-host.sh, sourced by every shell startup path:
   - login shells (ssh, su -, sudo -i, bash -l, VS Code's environment probe): /etc/profile;
   - interactive non-login shells (terminals, VS Code's terminal): a block at the *top* of
     /etc/bash.bashrc;
   - `ssh host cmd`: Debian's bash (SSH_SOURCE_BASHRC) reads /etc/bash.bashrc for commands run
     by sshd, before the file's "not interactive: return" line, so the same block runs;
   - `su user -c cmd` and other non-interactive bash: BASH_ENV from step 1.
   It lifts the PAM default for root, exempt users and users with a live grant (read from the
   host-access file, never from the YAML) and hides CUDA for everyone else, including sessions
   that bypassed PAM. A missing or unreadable host-access file means "not allowed".
   It also points DOCKER_HOST at the ds01 gate for members of the gate group, unless set.

Only CUDA_VISIBLE_DEVICES changes: nvidia-smi and NVML keep working for everyone. No wrapper
over any NVIDIA binary. Pure text builders; must not read or write files.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT_PATH = "/etc/profile.d/ds01-host.sh"
BASHRC_PATH = "/etc/bash.bashrc"
PAM_ENV_PATH = "/etc/security/pam_env.conf"
HIDDEN_MARKER = "DS01_GPU_HIDDEN"

BLOCK_BEGIN = "# BEGIN ds01 (managed by `ds01 host apply`; do not edit inside this block)"
BLOCK_END = "# END ds01"

_SCRIPT = """\
# ds01 host access: who may compute on this host's GPUs outside containers.
# Managed by `ds01 host apply` (rendered from the ds01 config); local edits are overwritten.
#
# Sourced by /etc/profile (login shells), by the ds01 block at the top of /etc/bash.bashrc
# (interactive shells and `ssh host cmd`) and through BASH_ENV (non-interactive bash such as
# `su user -c cmd`). PAM (/etc/security/pam_env.conf) already set CUDA_VISIBLE_DEVICES="" for
# the session; this lifts it for root, exempt users and users with a live grant listed in
# @HOST_ACCESS@ (written by ds01d) and hides host CUDA for everyone else. A missing or
# unreadable file means "not allowed". Queries (nvidia-smi, NVML) are never blocked.
# POSIX sh, silent, and safe under `set -eu`.
{ case $- in *x*) ds01_xtrace=1; set +x ;; *) ds01_xtrace= ;; esac; } 2>/dev/null
ds01_host_env() {
    ds01_allowed=
    if [ -n "${BASH_VERSION-}" ]; then
        ds01_uid=$EUID
    else
        ds01_uid=$(id -u 2>/dev/null) || ds01_uid=
    fi
    if [ "$ds01_uid" = 0 ]; then
        ds01_allowed=1
    elif [ -r @HOST_ACCESS@ ]; then
        ds01_me=$(id -un 2>/dev/null) || ds01_me=
        ds01_now=${EPOCHSECONDS-}
        if [ -z "$ds01_now" ]; then ds01_now=$(date +%s 2>/dev/null) || ds01_now=; fi
        while IFS=' ' read -r ds01_u ds01_k ds01_t ds01_rest || [ -n "${ds01_u-}" ]; do
            if [ -n "$ds01_me" ] && [ "$ds01_u" = "$ds01_me" ] && [ -z "$ds01_rest" ]; then
                case $ds01_k:$ds01_t in
                    exempt:0 | grant:0) ds01_allowed=1; break ;;
                    exempt:*[!0-9]* | grant:*[!0-9]* | exempt: | grant:) ;;
                    exempt:* | grant:*)
                        if [ -n "$ds01_now" ] && [ "$ds01_t" -gt "$ds01_now" ] 2>/dev/null; then
                            ds01_allowed=1; break
                        fi ;;
                esac
            fi
            ds01_u=
        done < @HOST_ACCESS@
    fi
    if [ -n "$ds01_allowed" ]; then
        if [ "${@MARKER@-}" = 1 ]; then
            if [ -z "${CUDA_VISIBLE_DEVICES-}" ]; then unset CUDA_VISIBLE_DEVICES; fi
            unset @MARKER@
        fi
    else
        CUDA_VISIBLE_DEVICES=
        @MARKER@=1
        export CUDA_VISIBLE_DEVICES @MARKER@
    fi
    if [ -z "${DOCKER_HOST-}" ] && [ "$ds01_uid" != 0 ]; then
        case " $(id -Gn 2>/dev/null) " in
            *" @GATE_GROUP@ "*) DOCKER_HOST=@DOCKER_HOST@; export DOCKER_HOST ;;
        esac
    fi
    return 0
}
ds01_host_env
unset -f ds01_host_env
unset ds01_allowed ds01_uid ds01_me ds01_now ds01_u ds01_k ds01_t ds01_rest
if [ -n "$ds01_xtrace" ]; then unset ds01_xtrace; set -x; else unset ds01_xtrace; fi
"""


def _quote(path: str) -> str:
    """Shell-safe form of a path: bare when it only holds safe characters, else single-quoted."""
    if path and all(c.isalnum() or c in "/._-+@:" for c in path):
        return path
    return "'" + path.replace("'", "'\\''") + "'"


def _in_double_quotes(text: str) -> str:
    """Escape text for use inside "…" in sh (where glob characters are already literal)."""
    for special in ("\\", '"', "$", "`"):
        text = text.replace(special, "\\" + special)
    return text


def profile_script(host_access: Path, gate_socket: Path, gate_group: str) -> str:
    """The decision script installed as /etc/profile.d/ds01-host.sh."""
    return (
        _SCRIPT.replace("@HOST_ACCESS@", _quote(str(host_access)))
        .replace("@MARKER@", HIDDEN_MARKER)
        .replace("@GATE_GROUP@", _in_double_quotes(gate_group))
        .replace("@DOCKER_HOST@", _quote(f"unix://{gate_socket}"))
    )


def bashrc_block() -> list[str]:
    """Lines placed at the very top of /etc/bash.bashrc (before its 'not interactive' return)."""
    return [
        BLOCK_BEGIN,
        "# First, so that `ssh host cmd` (which bash runs through this file) gets it too.",
        f"if [ -r {SCRIPT_PATH} ]; then . {SCRIPT_PATH}; fi",
        BLOCK_END,
    ]


def pam_env_block() -> list[str]:
    """Lines appended to /etc/security/pam_env.conf: hide host CUDA in every PAM session."""
    return [
        BLOCK_BEGIN,
        "# Fail closed: every PAM session (sshd, su, sudo, login, cron) starts with host CUDA",
        f"# hidden; {SCRIPT_PATH} lifts it for exempt and granted users.",
        'CUDA_VISIBLE_DEVICES\tDEFAULT=""',
        f"{HIDDEN_MARKER}\tDEFAULT=1",
        f"BASH_ENV\tDEFAULT={SCRIPT_PATH}",
        BLOCK_END,
    ]
