"""Where a webhook may go: the host's addresses are resolved and checked, and a delivery
connects to the very address that was checked (no second lookup a DNS answer could
change in between: DNS rebinding).

Refused unless WEBHOOK_ALLOW_PRIVATE: any address that is not globally routable
(loopback, private, link-local, shared, reserved, multicast, unspecified; IPv4 inside
IPv6 is judged as IPv4) and the cloud metadata endpoints, some of which are public
addresses. A host with several addresses is refused if any of them is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (tests inject one).
Resolver = Callable[[str, int], Awaitable[list[str]]]
# A lookup that takes longer is a refusal (a create request must not hang on DNS).
RESOLVE_TIMEOUT_S = 5.0

# Metadata services that answer on addresses `is_global` does not exclude (or that a
# reader would look for here): AWS/GCP/Azure/OCI (169.254.169.254 and AWS's IPv6 one),
# ECS task metadata, Alibaba, Azure's wire server, Oracle's legacy one.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
        "192.0.0.192",
    )
)


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach; or it does
    not resolve. The message names the host, never anything else of the URL."""


def refused_reason(address: IPAddress) -> str | None:
    """Why a webhook may not connect to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_multicast:
        return "not a public address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Destination:
    """A checked URL: `address` is where to connect; `url` the URL as given."""

    url: httpx.URL
    address: str

    def request(self, content: bytes, headers: dict[str, str]) -> httpx.Request:
        """A POST to `address`, with the URL's own Host header and TLS server name (so the
        certificate is checked against the host, not the address)."""
        host = self.url.host
        ip = self.address.split("%", 1)[0]
        pinned = self.url.copy_with(host=ip)
        netloc = host if self.url.port is None else f"{_bracketed(host)}:{self.url.port}"
        request = httpx.Request(
            "POST", pinned, content=content, headers={**headers, "Host": netloc}
        )
        if self.url.scheme == "https":
            request.extensions["sni_hostname"] = host
        return request


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class AddressPolicy:
    """Checks webhook URLs against the rule above; `allow_private` turns the check off
    (the delivery still connects to the address it resolved)."""

    def __init__(self, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self._resolve = resolver

    async def destination(self, url: str) -> Destination:
        """Resolve the URL's host and check every address; raises AddressRefused."""
        parsed = httpx.URL(url)
        host = parsed.host
        if not host:
            raise AddressRefused("the URL has no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [host]
        else:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    addresses = await self._resolve(host, port)
            except (OSError, UnicodeError, TimeoutError) as exc:
                raise AddressRefused(f"the host {host} does not resolve") from exc
            if not addresses:
                raise AddressRefused(f"the host {host} does not resolve")
        if not self.allow_private:
            for address in addresses:
                reason = refused_reason(ipaddress.ip_address(address.split("%", 1)[0]))
                if reason is not None:
                    shown = host if literal is not None else f"{host} resolves to {address}"
                    raise AddressRefused(
                        f"{shown}: {reason} (webhooks only go to public addresses)"
                    )
        return Destination(parsed, addresses[0])
