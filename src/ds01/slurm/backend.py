"""Whether a config file runs containers through SLURM (`cluster.backend: slurm`), told from its
text without loading it.

The CLI asks this before every container command, and its quick path (cli/quick.py) before
every answer, so a config that never names slurm costs one small read and no YAML or pydantic.
A match is only a hint: the caller loads the config to be sure (cli/slurmjobs.py), or leaves the
command to the full command line, which does.
"""

from __future__ import annotations

import os
import re
import stat

MAX_CONFIG_BYTES = 1 << 20  # far more than any ds01.yaml
_SLURM_BACKEND = re.compile(r"""backend:\s*["']?slurm\b""")


def may_name_slurm_backend(config: str | os.PathLike[str]) -> bool:
    """True when the file's text could set `cluster.backend: slurm`, or it is no plain file of
    a config's size (the config loader then says what is wrong); False when it cannot, or
    cannot be read (the local backend's commands explain what is wrong with it)."""
    try:
        fd = os.open(config, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the command
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
            return True
        text = os.read(fd, MAX_CONFIG_BYTES).decode("utf-8", "replace")
    except OSError:
        return False
    finally:
        os.close(fd)
    return _SLURM_BACKEND.search(text) is not None
