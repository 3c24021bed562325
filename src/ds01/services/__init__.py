"""The daemon's use cases, one transaction each: allocate, release, drain, status, quota."""
