"""Service configuration: one pydantic-settings class read from the environment."""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import socket
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The first Chromium binary on PATH (Debian's package installs /usr/bin/chromium)."""
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Settings(BaseSettings):
    """Every knob of the service. Names are the environment variables (case-insensitive)."""

    # hide_input_in_errors: a bad value (a secret, a key) is never echoed by a start-up error.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = Field(
        default_factory=lambda: (
            f"sqlite+aiosqlite:///{Path('data').absolute() / 'agent_sessions.db'}"
        ),
        description="SQLAlchemy async URL; SQLite file under ./data by default.",
    )
    api_keys: str = Field(default="", description="key1:tenantA,key2:tenantB; empty disables auth.")
    allow_no_auth: bool = False
    cors_allow_origins: str = Field(
        default="",
        description="Comma-separated origins browsers may call from (https://app.example.com); "
        "empty: none.",
    )

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None

    default_anthropic_model: str = "claude-sonnet-4-6"
    default_openai_model: str = "gpt-5.4"
    default_max_steps: int = Field(default=50, ge=1, le=1000)
    default_image_retention: int = Field(default=3, ge=1, le=100)
    default_thinking_budget: int | None = None
    default_prompt_caching: bool = True
    default_safety_check_timeout_s: float = 900.0
    default_display_width: int = 1280
    default_display_height: int = 800
    max_tokens: int = 4096

    run_time_limit_s: float = Field(
        default=3600.0, gt=0, description="Wall-clock limit of one run."
    )
    max_active_runs: int = Field(default=16, ge=1)
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    sse_retry_ms: int = 2000
    subscriber_queue_size: int = 1024
    shutdown_grace_s: float = 10.0

    provider_max_retries: int = 4
    provider_timeout_s: float = 300.0
    provider_backoff_initial_s: float = 1.0
    provider_backoff_max_s: float = 20.0
    provider_retry_after_max_s: float = 60.0

    kernel_api_key: str | None = None
    kernel_base_url: str | None = Field(
        default=None, description="Kernel API endpoint; unset means Kernel's production API."
    )
    kernel_browser_timeout_s: int = Field(
        default=3600,
        ge=10,
        le=259200,
        description="Seconds without activity before Kernel ends a browser (its timeout_seconds).",
    )

    chromium_path: str | None = Field(default_factory=find_chromium)
    computer_idle_ttl_s: float = Field(
        default=600.0,
        ge=0,
        description="Release the computer of a session idle this long (0: keep it until close).",
    )
    browser_headless: bool = True
    enable_fake_computer: bool = False

    event_batch_max: int = 512

    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        min_length=1,
        max_length=80,
        description="This process's name in leases, logs, /readyz and run events; unique.",
    )
    lease_ttl_s: float = Field(
        default=10.0, gt=0, description="A run's lease lapses this long after its last renewal."
    )
    lease_renew_s: float = Field(
        default=2.0, gt=0, description="How often the owner of a run renews its lease."
    )
    claim_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a replica looks for queued runs and lapsed leases to claim.",
    )

    # Per-tenant limits (SPEC v2.3), for the whole deployment; unset: no limit.
    tenant_max_active_runs: int | None = Field(
        default=None,
        ge=1,
        description="Runs one tenant may have active at once across all replicas (running or "
        "awaiting a safety check); beyond it, its runs wait queued.",
    )
    tenant_requests_per_s: int | None = Field(
        default=None,
        ge=1,
        description="Requests one tenant may make per second across all replicas (a fixed "
        "one-second window); beyond it, 429 with Retry-After.",
    )

    # Idempotency keys and retention (SPEC v2.3).
    idempotency_ttl_s: float = Field(
        default=86400.0,
        gt=0,
        description="How long a POST's Idempotency-Key and its first answer are kept (24 h).",
    )
    idempotency_wait_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a repeat waits for the first request of its key to finish "
        "before it gets 409 (0: 409 at once).",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Purge closed sessions unchanged for this many days, with everything "
        "they own; unset: keep forever.",
    )
    purge_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="How often expired idempotency keys (and, with RETENTION_DAYS, old "
        "closed sessions) are purged.",
    )

    # Webhooks (SPEC v2.3); app/webhooks/.
    default_webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="The webhook of sessions that name none (set by the operator: exempt from "
        "the private-address rule).",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="whsec_<base64>: signs the webhooks of tenants not in WEBHOOK_SECRETS.",
    )
    webhook_secrets: SecretStr = Field(
        default=SecretStr(""), description="tenant:whsec_<base64>,...: per-tenant signing secrets."
    )
    webhook_retry_delays_s: str = Field(
        default="5,30,120,600,1800,3600,7200,14400,28800,43200",
        description="Seconds before each retry of a failed delivery; after the last, given up.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs whose host is or resolves to a loopback, private, "
        "link-local or metadata address.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one delivery attempt."
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=1000, description="Delivery attempts in flight per replica."
    )
    webhook_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a replica looks for due deliveries (its own commits and "
        "answers also wake it at once).",
    )

    # Observability (SPEC v2.4); app/observability/.
    metrics_token: SecretStr | None = Field(
        default=None, description="When set, GET /metrics needs Authorization: Bearer <token>."
    )
    model_prices_file: Path | None = Field(
        default=None,
        description="JSON {model: {input, output, cache_write?, cache_read?}} in USD per "
        "million tokens, over the built-in list prices.",
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None, description="json or text; unset: json unless stderr is a terminal."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL; traces are exported only when it is set.",
    )

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format_any_case(cls, value: object) -> object:
        return (value.strip().lower() or None) if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # Accept the plain URLs people paste and pick the async driver the service uses.
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value[len("postgresql://") :]
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value[len("sqlite:///") :]
        return value

    @model_validator(mode="after")
    def _webhooks_valid(self) -> Settings:
        # Parsed once here, so a bad value stops start-up rather than the first delivery.
        _ = self.webhook_delays, self.webhook_tenant_secrets
        if self.webhook_secret is not None:
            _check_whsec(self.webhook_secret.get_secret_value(), "WEBHOOK_SECRET")
        url = self.default_webhook_url
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("DEFAULT_WEBHOOK_URL must be an http(s) URL")
        return self

    @property
    def webhook_delays(self) -> tuple[float, ...]:
        """WEBHOOK_RETRY_DELAYS_S as seconds: the pause before retry 1, 2, ..."""
        try:
            delays = tuple(
                float(item) for item in self.webhook_retry_delays_s.split(",") if item.strip()
            )
        except ValueError:
            raise ValueError("WEBHOOK_RETRY_DELAYS_S must be comma-separated seconds") from None
        if any(not 0 <= delay <= 7 * 86400 for delay in delays):
            raise ValueError("WEBHOOK_RETRY_DELAYS_S: each delay from 0 to 604800 seconds")
        return delays

    @property
    def webhook_tenant_secrets(self) -> dict[str, str]:
        """Tenant -> whsec_ secret, parsed from WEBHOOK_SECRETS (values never in errors)."""
        secrets: dict[str, str] = {}
        for item in self.webhook_secrets.get_secret_value().split(","):
            item = item.strip()
            if not item:
                continue
            tenant, sep, secret = item.partition(":")
            if not sep or not tenant or not secret:
                raise ValueError("WEBHOOK_SECRETS entries must look like tenant:whsec_<base64>")
            _check_whsec(secret, f"WEBHOOK_SECRETS (tenant {tenant})")
            secrets[tenant] = secret
        return secrets

    @model_validator(mode="after")
    def _renew_before_lapse(self) -> Settings:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError("LEASE_RENEW_S must be at most half of LEASE_TTL_S")
        return self

    @property
    def tenant_keys(self) -> dict[str, str]:
        """API key -> tenant, parsed from API_KEYS."""
        keys: dict[str, str] = {}
        for item in self.api_keys.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, tenant = item.partition(":")
            if not sep or not key or not tenant:
                raise ValueError("API_KEYS entries must look like key:tenant")
            keys[key] = tenant
        return keys

    @property
    def cors_origins(self) -> list[str]:
        """The origins of CORS_ALLOW_ORIGINS, without the trailing slash a paste may bring."""
        return [o.strip().rstrip("/") for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _check_whsec(secret: str, name: str) -> None:
    """A Standard Webhooks secret: whsec_ and base64 of at least 16 bytes."""
    body = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith("whsec_") or len(key) < 16:
        raise ValueError(f"{name} must be whsec_ followed by base64 of at least 16 bytes")


@lru_cache
def get_settings() -> Settings:
    return Settings()
