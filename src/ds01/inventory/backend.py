"""The narrow interface every inventory backend implements (nvml, sim, capture).

A backend produces one frozen MachineSample per call; callers keep the latest sample and read
it many times (no NVML calls while serving a request). Backends are chosen explicitly — there is
no silent fallback from a real backend to a simulated one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ds01.model.inventory import MachineSample


@runtime_checkable
class InventoryBackend(Protocol):
    name: str

    def sample(self) -> MachineSample:
        """Read the machine now. Raises InventoryError when the source cannot be read."""
        ...

    def close(self) -> None: ...
