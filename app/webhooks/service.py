"""The webhook parts of one replica, built from the settings: the outbox the event log
writes to, the address policy and signer a create request checks a webhook with, and
the delivery worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.events.log import EventLog
from app.settings import Settings
from app.webhooks.addresses import AddressPolicy, AddressRefused, Resolver, system_resolver
from app.webhooks.delivery import Apply, WebhookDeliverer, WebhookSender
from app.webhooks.outbox import Outbox
from app.webhooks.signing import Signer


class WebhookRefused(Exception):
    """A session's webhook cannot be accepted; `field` names the part of the body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class Webhooks:
    outbox: Outbox
    policy: AddressPolicy
    signer: Signer
    deliverer: WebhookDeliverer

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        event_log: EventLog,
        resolver: Resolver = system_resolver,
    ) -> Webhooks:
        """The parts; the worker writes through `event_log`'s writer (not started here)."""
        outbox = Outbox(settings.default_webhook_url)
        policy = AddressPolicy(settings.webhook_allow_private, resolver)
        signer = Signer(settings)
        sender = WebhookSender(settings, policy, signer, resolver)

        async def write(apply: Apply) -> Any:
            _, result = await event_log.transact("", None, (), apply)
            return result

        deliverer = WebhookDeliverer(settings, write, sender)
        outbox.on_commit = deliverer.wake
        return cls(outbox, policy, signer, deliverer)

    async def check(self, tenant: str, url: str) -> None:
        """At create: the tenant can sign, and the URL's host is an allowed address."""
        if not self.signer.can_sign(tenant):
            raise WebhookRefused(
                "webhook",
                "this service has no webhook signing secret for your tenant "
                "(the operator sets WEBHOOK_SECRETS or WEBHOOK_SECRET)",
            )
        try:
            await self.policy.destination(url)
        except AddressRefused as exc:
            raise WebhookRefused("webhook.url", str(exc)) from exc
