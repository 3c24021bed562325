"""Pure allocation decisions on a Snapshot: quotas, placement, refusal messages.

Imports no store, Docker, NVML or config: services/ builds the Snapshot inside the database
transaction, calls place(), and writes the result in the same transaction.

    place.py      the numbered steps; the only entry point
    request.py    well-formed? known profiles? the least a request costs
    quotas.py     the five quota rules, in order
    placement.py  which free units: LRU, NVLink/NUMA, MIG packing, preferred units
    fit.py        gpueq=X: the fewest, smallest units worth at least X
    busy.py       units busy outside ds01: chosen last, with a warning or a refusal
    explain.py    every refusal text, from one table
    facts.py      what the snapshot says, read once
    demand.py     what a request costs, as distinct types
"""

from ds01.scheduler.place import place
from ds01.scheduler.snapshot import (
    Holding,
    Placement,
    Request,
    RequestKind,
    Snapshot,
    UnitState,
)

__all__ = ["Holding", "Placement", "Request", "RequestKind", "Snapshot", "UnitState", "place"]
