"""Builds and sends each Messages API request of an Anthropic run.

Everything a request needs that does not change during a run (tool version,
beta header, advertised display, system prompt, thinking) is resolved once
here. Per request it trims old screenshots, sets the cache breakpoints and
resolves screenshot references to base64, through a small cache of encoded
images so a screenshot is read and encoded once while it stays in the window.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from datetime import date
from typing import Any

from anthropic import AsyncAnthropic
from anthropic.types import Message
from anthropic.types.beta import BetaMessage

from app.agents import anthropic_transcript as tx
from app.agents import structured
from app.agents.anthropic_events import usage_of
from app.agents.anthropic_tools import (
    BETA_HEADERS,
    TOOL_VERSIONS,
    TOOLSET,
    thinking_params,
    tool_params,
    tool_version_for_model,
)
from app.agents.base import ProviderError, RunContext
from app.agents.prompts import computer_use_system_prompt
from app.computers.base import Display, ShotImage
from app.computers.scaling import ScaleMap, choose_scaled_size

# The system prompt's breakpoint plus these makes 4, the API's maximum.
CACHED_USER_TURNS = 3
MAX_IMAGES_PER_REQUEST = 100


class RequestBuilder:
    """The request side of one run: resolved settings plus the encoded-image cache."""

    def __init__(
        self,
        client: AsyncAnthropic,
        ctx: RunContext,
        screen: Display,
        *,
        image_chunk: int | None,
        today: date,
    ) -> None:
        config = ctx.config
        self.client = client
        self.ctx = ctx
        self.model = config.model
        self.version = config.tool_version or tool_version_for_model(config.model)
        if self.version not in TOOL_VERSIONS:
            raise ValueError(f"tool_version {self.version!r} is not an Anthropic computer tool")
        self.scale = ScaleMap(screen, choose_scaled_size(screen, "anthropic", self.version))
        self.tool = tool_params(self.version, self.scale.model.width, self.scale.model.height)
        self.system = structured.with_instructions(
            computer_use_system_prompt(config.computer_type, config.system_prompt, today=today),
            config.output_schema,
        )
        self.thinking, self.max_tokens = thinking_params(
            config.model, config.thinking_budget, config.max_tokens
        )
        self.caching = config.prompt_caching
        # Keep the N newest screenshots; drop older ones `chunk` at a time so the
        # prefix (and the prompt cache) holds for several turns, never over 100 images.
        keep = config.image_retention if config.image_retention > 0 else MAX_IMAGES_PER_REQUEST
        self.keep = min(keep, MAX_IMAGES_PER_REQUEST)
        default_chunk = min(self.keep, MAX_IMAGES_PER_REQUEST - self.keep)
        self.chunk = max(1, image_chunk if image_chunk is not None else default_chunk)
        self.turns = config.turn_retention or 0
        self._turns_cut = 0  # old turns the last request left out
        self._images_cut: int | None = None  # old images it replaced
        self._sources: OrderedDict[str, dict[str, str]] = OrderedDict()

    def remember(self, shot_id: str, image: ShotImage) -> None:
        """Cache a screenshot just stored, so the next request needs no read back."""
        self._sources[shot_id] = _source(image)
        self._evict()

    def _evict(self) -> None:
        while len(self._sources) > self.keep + self.chunk + 2:
            self._sources.popitem(last=False)

    async def build(self, messages: list[tx.Message]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(keyword arguments for create(), a summary for the turn record without images)."""
        sent = tx.retain_images(messages, self.keep, self.chunk)
        omitted = self._turns_to_omit(messages)
        sent = tx.drop_turns(sent, omitted)
        if self.caching:
            sent = tx.add_cache_breakpoints(sent, CACHED_USER_TURNS)
        for shot_id in tx.screenshot_ids(sent):
            if shot_id not in self._sources:
                self._sources[shot_id] = _source(await self.ctx.load_screenshot(shot_id))
            self._sources.move_to_end(shot_id)
        sent = tx.resolve_images(sent, self._sources.__getitem__)
        self._evict()
        system: dict[str, Any] = {"type": "text", "text": self.system}
        if self.caching:
            system["cache_control"] = dict(tx.EPHEMERAL)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [system],
            "messages": sent,
            "tools": [self.tool],
        }
        if self.thinking is not None:
            kwargs["thinking"] = self.thinking
        summary = {
            "model": self.model,
            "tool_version": self.version,
            "betas": self.betas,
            "max_tokens": self.max_tokens,
            "thinking": self.thinking,
            "tools": [self.tool],
            "system_chars": len(self.system),
            "messages": len(sent),
            "turns_omitted": omitted,
            "images": tx.count_images(sent),
            # Only the system prompt and last blocks carry one (a full walk of the
            # request, as the tests do, costs more than the rest of the summary).
            "cache_breakpoints": int("cache_control" in system)
            + sum(1 for m in sent if m["content"] and "cache_control" in m["content"][-1]),
        }
        return kwargs, summary

    def _turns_to_omit(self, messages: list[tx.Message]) -> int:
        """Old turns leave the request when old images do (the prefix changes then
        anyway: one cache rewrite, not two), or, without screenshots to go by, once
        two chunks more could go. Between `turn_retention` and about three chunks
        more turns are sent."""
        if self.turns <= 0:
            return 0
        target = tx.turns_to_drop(messages, self.turns, self.chunk)
        images_cut = tx.image_cut(messages, self.keep, self.chunk)
        if images_cut != self._images_cut or target >= self._turns_cut + 2 * self.chunk:
            self._turns_cut = max(self._turns_cut, target)
        self._images_cut = images_cut
        # Never more than may go now (a rebuilt request, a transcript from elsewhere).
        return min(self._turns_cut, tx.turns_to_drop(messages, self.turns, 1))

    @property
    def betas(self) -> list[str]:
        return [BETA_HEADERS[self.version]] if self.version in BETA_HEADERS else []

    async def send(
        self, messages: list[tx.Message], index: int
    ) -> tuple[list[tx.Block], str | None, dict[str, Any]]:
        """One model call through the runner's retry policy: (the response's blocks, its
        stop_reason, the TurnRecord fields of turn `index` with no actions yet)."""
        started = time.monotonic()
        kwargs, summary = await self.build(messages)
        try:
            response = await self.ctx.call_provider(lambda: self._create(kwargs))
        except ProviderError as exc:
            if exc.status_code != 413 or self.keep <= 1:
                raise
            # 413 request_too_large: images are what grows; retry once with the newest only.
            self.keep, self.chunk = 1, 1
            kwargs, summary = await self.build(messages)
            response = await self.ctx.call_provider(lambda: self._create(kwargs))
        turn = {
            "index": index,
            "request": summary,
            "response": response.model_dump(mode="json"),
            "usage": usage_of(response.usage),
            "latency_ms": int((time.monotonic() - started) * 1000),
            "actions": [],
            "results": [],
        }
        # to_dict keeps exactly the fields the API sent: thinking blocks go back unchanged.
        blocks = [block.to_dict(mode="json") for block in response.content]
        return blocks, response.stop_reason, turn

    async def _create(self, kwargs: dict[str, Any]) -> Message | BetaMessage:
        # An explicit timeout: the SDK refuses a non-streaming call with a large
        # max_tokens otherwise. The runner's own deadline bounds the call anyway.
        if self.version == TOOLSET:
            # The GA toolset lives in the GA namespace (types/computer_toolset_20260801_param).
            return await self.client.messages.create(**kwargs, timeout=self.client.timeout)
        return await self.client.beta.messages.create(
            **kwargs, betas=self.betas, timeout=self.client.timeout
        )


def _source(image: ShotImage) -> dict[str, str]:
    return {
        "type": "base64",
        "media_type": image.media_type,
        "data": base64.b64encode(image.data).decode("ascii"),
    }
