"""Whether a config file runs containers through SLURM (`cluster.backend: slurm`), told from its
text without loading it.

The CLI asks this before every container command, and its quick path (cli/quick.py) before
every answer, so a config that never names slurm costs one small read and no YAML or pydantic.
A match is only a hint: the caller loads the config to be sure (cli/slurmjobs.py), or leaves the
command to the full command line, which does.
"""

from __future__ import annotations

import re
from pathlib import Path

_SLURM_BACKEND = re.compile(r"""backend:\s*["']?slurm\b""")


def may_name_slurm_backend(config: Path) -> bool:
    """True when the file's text could set `cluster.backend: slurm`; False when it cannot, or
    cannot be read (then the local backend's commands explain what is wrong with it)."""
    try:
        text = config.read_text(errors="replace")
    except OSError:
        return False
    return _SLURM_BACKEND.search(text) is not None
