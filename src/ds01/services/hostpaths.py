"""What the host lets a container have: which host paths a caller may mount (the one rule for
`ds01 container deploy`, the gate's binds and the invariant checker), and limits fitted to the
host's CPU count. Reads the filesystem; talks to no engine and no database.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace

from ds01.config import Config
from ds01.errors import Refusal, RefusalReason, UsageError
from ds01.identity import Caller
from ds01.model.limits import Limits

# Host paths no container may mount, whoever owns them (compared with the resolved path, so a
# symlink to one of them is refused too). "/" itself is refused separately: everything is under it.
SYSTEM_PATHS = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/run",
    "/var/run",
    "/root",
    "/var/lib/docker",
    "/var/lib/ds01",
)


@dataclass(frozen=True)
class HostPathGrant:
    """A host path a caller may mount: `real` is the resolved path (mount that, not the one
    given); `read_only` is True when only a read-only mount is allowed (a read-only share)."""

    real: str
    read_only: bool


def allowed_host_path(
    caller: Caller, path: str, config: Config, *, directories_only: bool = True
) -> HostPathGrant:
    """May the caller mount this host path into a container? The one rule for `ds01 container
    deploy --workspace/--data` and for binds through the Docker gate.

    The check is on the resolved path, not the string: a symlink the user made to /etc
    resolves to /etc, which the user does not own. Allowed: a path under a shared path from the
    config (read-only if the share is), else a path the caller owns. Never a system path
    (SYSTEM_PATHS, "/") for anyone but root. Missing paths are refused (Docker would create them
    as root).
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        # A NUL makes every os call raise ValueError; other control characters are no path
        # anyone means, and would reach terminals in messages.
        raise UsageError(
            f"{path!r}: a path with control characters", fix="Give the directory's plain path."
        )
    if not os.path.isabs(path):
        raise UsageError(
            f"{path}: give an absolute path",
            fix=f"Use e.g. {os.path.join('/home', caller.name, path)}.",
        )
    real = os.path.realpath(path)
    shown = path + (f" (resolves to {real})" if real != path else "")
    if not caller.is_root and (
        real == "/" or any(real == p or real.startswith(p + "/") for p in SYSTEM_PATHS)
    ):
        raise Refusal(
            RefusalReason.PATH_NOT_ALLOWED,
            f"you may not mount {shown}",
            why="System directories (/, /etc, /proc, /sys, /dev, /run, Docker's and ds01's "
            "state) give a container control over the host.",
            fix="Mount a directory in your home, or ask an admin to share the data you need.",
        )
    try:
        st = os.stat(real)
    except OSError:
        what = "directory" if directories_only else "file or directory"
        raise UsageError(
            f"{path}: no such {what}", fix="Create it first (mkdir -p), then try again."
        ) from None
    if directories_only and not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: not a directory")
    for shared in config.storage.shared_paths:
        root = os.path.realpath(str(shared.path))
        if real == root or real.startswith(root.rstrip("/") + "/"):
            return HostPathGrant(real, read_only=shared.read_only)
    if st.st_uid == caller.uid or caller.is_root:
        return HostPathGrant(real, read_only=False)
    raise Refusal(
        RefusalReason.PATH_NOT_ALLOWED,
        f"you may not mount {shown}",
        why="Only directories you own, or shared paths the admin listed, can be mounted.",
        fix="Mount a directory in your home, or ask an admin to share this one.",
    )


def host_fitted(limits: Limits) -> Limits:
    """A CPU limit above the host's core count means "all of them": Docker refuses more."""
    cores = os.cpu_count() or 1
    if limits.cpus is not None and limits.cpus > cores:
        return replace(limits, cpus=float(cores))
    return limits
