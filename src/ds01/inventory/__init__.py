"""GPU inventory: backends (nvml, sim, capture), nvidia-smi parsers, gpueq weights."""
