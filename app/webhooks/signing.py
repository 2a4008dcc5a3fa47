"""Standard Webhooks signatures with the tenant's secret (WEBHOOK_SECRETS, else
WEBHOOK_SECRET): `webhook-id` (the outbox row's id, the same at every attempt),
`webhook-timestamp` and `webhook-signature` (fresh at every attempt)."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks import Webhook

from app.settings import Settings


class NoSecret(Exception):
    """No signing secret applies to the tenant: nothing may be sent unsigned."""


class Signer:
    """Signs a body for a tenant; the secrets never leave this object."""

    def __init__(self, settings: Settings) -> None:
        self._by_tenant = {
            tenant: Webhook(secret) for tenant, secret in settings.webhook_tenant_secrets.items()
        }
        fallback = settings.webhook_secret
        self._fallback = Webhook(fallback.get_secret_value()) if fallback is not None else None

    def can_sign(self, tenant: str) -> bool:
        return tenant in self._by_tenant or self._fallback is not None

    def headers(self, tenant: str, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
        webhook = self._by_tenant.get(tenant, self._fallback)
        if webhook is None:
            raise NoSecret(f"no webhook signing secret for tenant {tenant}")
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": webhook.sign(msg_id, now, body),
        }

    def __repr__(self) -> str:
        return f"Signer(tenants={len(self._by_tenant)}, fallback={self._fallback is not None})"
