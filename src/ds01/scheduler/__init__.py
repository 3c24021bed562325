"""Pure allocation decisions on a Snapshot: quotas, placement, refusal messages.

Imports no store, Docker or NVML: services/ builds the Snapshot inside the database
transaction, calls place(), and writes the result in the same transaction.
"""
