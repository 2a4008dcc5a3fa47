"""Provider SDK clients (built once, with the SDK's own retries off) and the loops on them."""

from __future__ import annotations

from typing import Any

import anthropic
import openai

from app.agents.base import AgentLoop, ProviderError
from app.settings import Settings

SUPPORTED_PROVIDERS = ("anthropic", "openai")


class LoopRegistry:
    """provider name -> AgentLoop, sharing one async client per provider."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clients: dict[str, Any] = {}

    def supports(self, provider: str) -> bool:
        return provider in SUPPORTED_PROVIDERS

    def with_keys(self) -> list[str]:
        """The providers whose API key is set on the service (never the keys)."""
        keys = {
            "anthropic": self._settings.anthropic_api_key,
            "openai": self._settings.openai_api_key,
        }
        return [name for name in SUPPORTED_PROVIDERS if keys.get(name)]

    def default_model(self, provider: str) -> str:
        if provider == "openai":
            return self._settings.default_openai_model
        return self._settings.default_anthropic_model

    def _anthropic(self) -> anthropic.AsyncAnthropic:
        client = self._clients.get("anthropic")
        if client is None:
            if not self._settings.anthropic_api_key:
                raise ProviderError(
                    "ANTHROPIC_API_KEY is not set on the service", type_="configuration_error"
                )
            client = anthropic.AsyncAnthropic(
                api_key=self._settings.anthropic_api_key,
                base_url=self._settings.anthropic_base_url,
                # Every retry is the service's own, visible as provider.retry.
                max_retries=0,
                timeout=self._settings.provider_timeout_s,
            )
            self._clients["anthropic"] = client
        return client  # type: ignore[no-any-return]

    def _openai(self) -> openai.AsyncOpenAI:
        client = self._clients.get("openai")
        if client is None:
            if not self._settings.openai_api_key:
                raise ProviderError(
                    "OPENAI_API_KEY is not set on the service", type_="configuration_error"
                )
            client = openai.AsyncOpenAI(
                api_key=self._settings.openai_api_key,
                base_url=self._settings.openai_base_url,
                max_retries=0,
                timeout=self._settings.provider_timeout_s,
            )
            self._clients["openai"] = client
        return client  # type: ignore[no-any-return]

    def create(self, provider: str) -> AgentLoop:
        if provider == "anthropic":
            from app.agents.anthropic import AnthropicLoop

            return AnthropicLoop(self._anthropic())
        if provider == "openai":
            from app.agents.openai import OpenAILoop

            return OpenAILoop(self._openai())
        raise ProviderError(f"provider {provider!r} is not supported", type_="configuration_error")

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
