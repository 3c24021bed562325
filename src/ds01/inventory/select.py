"""Choosing the inventory backend: explicitly, never by guessing (BRIEF §5, STYLE 12).

Owns the rule: `--sim` wins; otherwise the config's `gpu.backend`. A missing config file is a
usage error that says how to choose; ds01 never falls back to a simulated machine because NVML
or the config is missing. Backends are imported here lazily, so importing this module (and
`ds01 --help`) does not load NVML.

Must not: sample, or catch a backend's errors (they reach the caller as they are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ds01.errors import UsageError
from ds01.inventory.backend import InventoryBackend


def resolve_sim(sim: str | Path, base_dir: Path | None = None) -> Path:
    """A --sim argument → its machine file: a path, or a shipped machine's name
    ('4xA100-40GB'). Raises MachineFileError when it names neither."""
    from ds01.inventory.sim import resolve_machine

    return resolve_machine(sim, base_dir)


def open_backend(
    kind: Literal["nvml", "sim"], sim_machine: Path | None, base_dir: Path | None = None
) -> InventoryBackend:
    """A backend of this kind. sim_machine is a machine file or a shipped machine's name,
    relative to base_dir (the config file's directory) when given."""
    if kind == "sim":
        if sim_machine is None:
            raise UsageError(
                "gpu.backend is 'sim' but no machine is named",
                fix="Set gpu.sim_machine to a machine file or a shipped name (4xA100-40GB), "
                "or pass --sim FILE.",
            )
        from ds01.inventory.sim import SimBackend

        return SimBackend(resolve_sim(sim_machine, base_dir))
    if kind == "nvml":
        from ds01.inventory.nvml import NvmlBackend

        return NvmlBackend()
    raise UsageError(f"unknown GPU backend '{kind}'", fix="Use 'nvml' or 'sim'.")


def backend_from_cli(sim: str | None, config_path: Path) -> InventoryBackend:
    """--sim FILE|NAME wins; else the config's gpu.backend. No config → UsageError."""
    if sim:
        return open_backend("sim", resolve_sim(sim))
    if not config_path.exists():
        raise UsageError(
            f"no GPU backend chosen: config file {config_path} does not exist",
            "ds01 reads gpu.backend from the config and never guesses one "
            "(a simulated machine is never a silent fallback).",
            "Pass --sim FILE (or a shipped machine: --sim 4xA100-40GB), or create the config "
            "with 'gpu: {backend: nvml}' (--config / DS01_CONFIG to use another file).",
        )
    from ds01.config import load_config

    gpu = load_config(config_path).gpu
    return open_backend(gpu.backend, gpu.sim_machine, config_path.parent)
