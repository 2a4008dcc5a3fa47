"""The address rule of webhooks, and that a delivery connects to the address that was
checked: a resolver is injected (the machine has no DNS of its own to play with), the
HTTP is real (the sender against a receiver on 127.0.0.1)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from app.settings import Settings
from app.webhooks.addresses import AddressPolicy, AddressRefused, refused_reason
from app.webhooks.delivery import WebhookSender
from app.webhooks.signing import Signer
from tests.fakes.webhook_receiver import SECRET, WebhookReceiver

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # AWS, GCP, Azure, OCI metadata
    "169.254.170.2",  # ECS task metadata
    "100.100.100.200",  # Alibaba metadata
    "168.63.129.16",  # Azure wire server: a public address
    "100.64.0.1",  # shared address space (carrier NAT)
    "224.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_and_metadata_addresses_are_refused(address: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) is None


def resolver_of(*answers: list[str]) -> Any:
    """A resolver that gives these answers in turn (the last one from then on)."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def test_a_host_with_any_private_address_is_refused() -> None:
    policy = AddressPolicy(False, resolver_of(["93.184.216.34", "10.0.0.7"]))
    with pytest.raises(AddressRefused, match=r"hooks\.example resolves to 10\.0\.0\.7"):
        await policy.destination("https://hooks.example/in")


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(AddressRefused, match="does not resolve"):
        await AddressPolicy(False, nowhere).destination("https://nowhere.example/")


async def test_localhost_through_the_system_resolver_is_refused() -> None:
    with pytest.raises(AddressRefused, match="loopback"):
        await AddressPolicy(False).destination("http://localhost:8080/")


def sender(policy: AddressPolicy, **settings: Any) -> WebhookSender:
    config = Settings(webhook_secret=SECRET, webhook_timeout_s=5, **settings)
    return WebhookSender(config, policy, Signer(config))


async def test_the_delivery_connects_to_the_address_it_resolved_keeping_the_host() -> None:
    """`receiver.invalid` exists in no DNS: the request can only have reached the receiver
    through the address the policy resolved, with the URL's own Host header."""
    resolve = resolver_of(["127.0.0.1"])
    with WebhookReceiver() as receiver:
        send = sender(AddressPolicy(True, resolve))
        try:
            answer = await send.send(
                "t", "msg_1", f"http://receiver.invalid:{receiver.port}/in?x=1", b'{"a":1}'
            )
        finally:
            await send.close()
        assert answer.status_code == 200 and answer.delivered
        (request,) = receiver.snapshot()
        assert request.headers["host"] == f"receiver.invalid:{receiver.port}"
        assert request.path == "/in?x=1"
        assert request.verify() == {"a": 1}
        assert resolve.calls == ["receiver.invalid"]


async def test_an_address_that_turned_private_since_create_is_refused_at_delivery() -> None:
    """DNS rebinding: public when the session was created, loopback at delivery time.
    The delivery checks the answer it connects with, and sends nothing."""
    resolve = resolver_of(["93.184.216.34"], ["127.0.0.1"])
    policy = AddressPolicy(False, resolve)
    with WebhookReceiver() as receiver:
        url = f"http://rebind.invalid:{receiver.port}/in"
        await policy.destination(url)  # the check at create passes
        send = sender(policy)
        try:
            answer = await send.send("t", "msg_1", url, b"{}")
        finally:
            await send.close()
        assert not answer.delivered and answer.status_code is None
        assert answer.error is not None and "refused" in answer.error
        assert "127.0.0.1" in answer.error and "loopback" in answer.error
        assert receiver.snapshot() == []


async def test_no_secret_for_the_tenant_means_nothing_is_sent() -> None:
    config = Settings(webhook_secrets=f"other:{SECRET}")
    with WebhookReceiver() as receiver:
        send = WebhookSender(config, AddressPolicy(True), Signer(config))
        try:
            answer = await send.send("t", "msg_1", receiver.url, b"{}")
        finally:
            await send.close()
        assert answer.error is not None and "no webhook signing secret" in answer.error
        assert receiver.snapshot() == []
