"""ds01d: the one privileged daemon (wiring, signals, instance lock)."""
