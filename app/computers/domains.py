"""Host matching for domain policies (allowed / blocked domains)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit


def host_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        # "example.com." is the same host as "example.com" (a trailing dot must not
        # slip past a domain policy).
        return (urlsplit(url).hostname or "").lower().rstrip(".") or None
    except ValueError:
        return None


def domain_matches(host: str, domains: Sequence[str]) -> bool:
    """`host` is one of `domains` or a subdomain of one (example.com covers a.example.com)."""
    for domain in domains:
        domain = domain.lower().strip().strip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False
