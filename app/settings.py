"""Service configuration: one pydantic-settings class read from the environment."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
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

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

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


@lru_cache
def get_settings() -> Settings:
    return Settings()
