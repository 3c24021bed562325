"""TCP listen addresses as ds01.yaml writes them (`web.listen: 127.0.0.1:9102`, or `off`).

Owns the text form `HOST:PORT` (`[::1]:9102` for IPv6) and whether an address is on the
loopback interface only. Pure: must not open sockets or resolve names — `localhost` is the one
name accepted, so what a name resolves to can never move a listener off loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ds01.units import describe

EXAMPLE = "HOST:PORT like 127.0.0.1:9102 or [::1]:9102, or off"


@dataclass(frozen=True)
class ListenAddress:
    host: str  # an IP address, or 'localhost'
    port: int

    @property
    def loopback(self) -> bool:
        """Reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: object) -> ListenAddress | None:
    """`127.0.0.1:9102` → ListenAddress; `off` (YAML reads a bare off as false) and null →
    None. ValueError saying what is expected otherwise."""
    if value is None or value is False or value == "off":
        return None
    bad = f"expected {EXAMPLE}; got {describe(value)}"
    if not isinstance(value, str):
        raise ValueError(bad)
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(bad)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(bad)
    elif ":" in host:
        raise ValueError(f"{bad} (write an IPv6 address in brackets: [::1]:9102)")
    if host != "localhost":
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(
                f"{bad} (an IP address or localhost: ds01d does not resolve names here)"
            ) from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port must be 1-65535, got {port}")
    return ListenAddress(host, port)
