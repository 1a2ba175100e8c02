"""Which addresses a callback may reach without `--callback-allow-private`."""

from __future__ import annotations

import ipaddress

__all__ = ["public_address"]


def public_address(address: str) -> bool:
    """Whether `address` (an IP) is one a callback may reach without
    `--callback-allow-private`: a global unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
