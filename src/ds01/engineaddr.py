"""The Docker engine's address (config `docker.host`): the one parser for `unix:///PATH`,
`tcp://HOST:PORT` and `ssh://HOST`, used by the config check, the runtime (the SDK and its raw
shell sockets), the gate's own engine connections and the doctor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

DEFAULT_TCP_PORT = 2375
EXPECTED = "unix://PATH, tcp://HOST:PORT or ssh://HOST"


@dataclass(frozen=True)
class EngineAddress:
    scheme: Literal["unix", "tcp", "ssh"]
    path: str | None = None  # unix: the socket
    host: str | None = None  # tcp, ssh
    port: int | None = None  # tcp

    @classmethod
    def parse(cls, text: str) -> EngineAddress:
        """Raises ValueError naming what is expected."""
        bad = ValueError(f"expected {EXPECTED}, got {text!r}")
        if text.startswith("unix://"):
            path = text.removeprefix("unix://")
            if not path.startswith("/"):
                raise bad
            return cls("unix", path=path)
        url = urlsplit(text)
        try:
            port = url.port
        except ValueError:
            raise bad from None
        if url.scheme == "tcp" and not url.path.strip("/"):
            return cls("tcp", host=url.hostname or "localhost", port=port or DEFAULT_TCP_PORT)
        if url.scheme == "ssh" and url.hostname:
            return cls("ssh", host=url.hostname, port=port)
        raise bad

    def __str__(self) -> str:
        """What messages show: the socket path, or host:port."""
        if self.scheme == "unix":
            return str(self.path)
        return f"{self.host}:{self.port}" if self.port else str(self.host)
