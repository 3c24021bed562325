"""ds01: a fair, safe, self-service GPU service for a shared multi-GPU server."""

__version__ = "0.1.0"
