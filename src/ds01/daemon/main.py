"""Entry point of `ds01d` (stub until the allocation-core issue lands)."""

from __future__ import annotations

import sys

from ds01 import __version__


def run() -> None:
    print(f"ds01d {__version__}")
    sys.exit(0)
