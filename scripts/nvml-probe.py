#!/usr/bin/env python3
"""Print what ds01's NVML backend reports on this machine, plus the raw NVML values, as JSON.

Run it on a real GPU machine to check the backend and to keep the output as a test fixture:

    PYTHONPATH=src python3 scripts/nvml-probe.py > nvml-$(hostname)-$(date +%F).json

Needs only nvidia-ml-py (module `pynvml`) and this repository's src/ on the path (added below
when run from a checkout). It imports NVML only through ds01.inventory.nvml, the one module
that owns it. Exit status: 0 with JSON on stdout; 1 with ds01's what/why/fix on stderr when
NVML cannot start (no driver, no permission).
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if (SRC / "ds01").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from ds01.errors import Ds01Error  # noqa: E402  (after the path set-up above)
from ds01.inventory.export import sample_to_json, units_to_json  # noqa: E402

try:
    from ds01.inventory.nvml import NvmlBackend, raw_probe
except ModuleNotFoundError as missing:
    sys.exit(f"{missing}: install nvidia-ml-py (pip install nvidia-ml-py), not 'pynvml'")


def main() -> int:
    backend = NvmlBackend()
    try:
        sample = backend.sample()
        report = {
            "probe": {
                "host": platform.node(),
                "kernel": platform.release(),
                "python": platform.python_version(),
                "taken_at": datetime.now(UTC).isoformat(),
            },
            "ds01_sample": sample_to_json(sample),
            "ds01_units": units_to_json(sample),
            "nvml_raw": raw_probe(),
        }
    except Ds01Error as err:
        for line in err.lines():
            print(line, file=sys.stderr)
        return 1
    finally:
        backend.close()
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
