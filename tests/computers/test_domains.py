"""Host matching for the domain policies."""

from __future__ import annotations

import pytest

from app.computers.domains import domain_matches, host_of


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Example.COM/x", "example.com"),
        ("http://blocked.example./secret", "blocked.example"),  # a trailing dot is the same host
        ("about:blank", None),
        ("not a url", None),
        (None, None),
    ],
)
def test_host_of(url: str | None, host: str | None) -> None:
    assert host_of(url) == host


@pytest.mark.parametrize(
    ("host", "domains", "matches"),
    [
        ("example.com", ["example.com"], True),
        ("a.b.example.com", ["example.com"], True),
        ("badexample.com", ["example.com"], False),
        ("example.com", [".example.com."], True),
        ("example.org", ["example.com"], False),
    ],
)
def test_domain_matches(host: str, domains: list[str], matches: bool) -> None:
    assert domain_matches(host, domains) is matches
