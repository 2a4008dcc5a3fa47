"""Builds and sends each Responses API request of an OpenAI run.

What does not change during a run (tool version, advertised display,
instructions, reasoning summaries) is resolved once here. Per request it
picks the chain (`previous_response_id` of the newest usable response plus
the items after it, or every item when there is none), resolves screenshot
references to data URLs through a small cache, and sends through the
runner's retry policy. A 404 on a chained request (the stored response
expired, was deleted, or lives in another project) is answered by resending
the whole conversation once, unchained.
"""

from __future__ import annotations

import base64
import io
import time
from collections import OrderedDict
from datetime import date
from typing import Any

from openai import AsyncOpenAI
from openai.types.responses import Response
from PIL import Image

from app.agents import openai_items as items_
from app.agents import structured
from app.agents.base import ProviderError, RunContext
from app.agents.openai_events import usage_of
from app.agents.openai_items import Item, Mark
from app.agents.openai_tools import (
    TOOL_VERSIONS,
    image_detail,
    reasoning_params,
    tool_params,
    tool_version_for_model,
)
from app.agents.prompts import computer_use_system_prompt
from app.computers.base import Display, ShotImage
from app.computers.scaling import ScaleMap, choose_scaled_size

# Reasoning items carry their encrypted content, so a resend without chaining works
# even when the server no longer has the items themselves.
INCLUDE = ["reasoning.encrypted_content"]


def _placeholder_url() -> str:
    """A tiny grey PNG for old screenshots in a full resend: a call output needs an image."""
    out = io.BytesIO()
    Image.new("RGB", (8, 5), (128, 128, 128)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


PLACEHOLDER_URL = _placeholder_url()


def data_url(image: ShotImage) -> str:
    return f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"


class RequestBuilder:
    """The request side of one run: resolved settings plus the encoded-image cache."""

    def __init__(self, client: AsyncOpenAI, ctx: RunContext, screen: Display, today: date):
        config = ctx.config
        self.client = client
        self.ctx = ctx
        self.model = config.model
        self.version = config.tool_version or tool_version_for_model(config.model)
        if self.version not in TOOL_VERSIONS:
            raise ValueError(f"tool_version {self.version!r} is not an OpenAI computer tool")
        self.scale = ScaleMap(screen, choose_scaled_size(screen, "openai", self.version))
        self.tool = tool_params(self.version, self.scale.model, config.computer_type)
        self.detail = image_detail(self.version)
        self.instructions = structured.with_instructions(
            computer_use_system_prompt(config.computer_type, config.system_prompt, today=today),
            config.output_schema,
        )
        self.reasoning = reasoning_params(self.version)
        # Only a full resend carries old screenshots (a chained request sends the new
        # ones alone); there, keep the newest `image_retention` (0 = all).
        self.keep = max(0, config.image_retention)
        self._urls: OrderedDict[str, str] = OrderedDict()

    def remember(self, shot_id: str, image: ShotImage) -> None:
        """Cache a screenshot just stored, so the next request needs no read back."""
        self._urls[shot_id] = data_url(image)
        self._evict()

    def _evict(self) -> None:
        while len(self._urls) > max(self.keep, 1) + 4:
            self._urls.popitem(last=False)

    async def build(
        self, items: list[Item], chain: Mark | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(keyword arguments for responses.create(), a summary for the turn record)."""
        if chain is not None:
            sent = items[chain["end"] :]
        else:
            sent = items_.retain_images(items, self.keep, PLACEHOLDER_URL)
        for shot_id in items_.screenshot_ids(sent):
            if shot_id not in self._urls:
                self._urls[shot_id] = data_url(await self.ctx.load_screenshot(shot_id))
            self._urls.move_to_end(shot_id)
        sent = items_.resolve_images(sent, self._urls.__getitem__)
        self._evict()
        kwargs: dict[str, Any] = {
            "model": self.model,
            # Instructions do not carry over through previous_response_id: always sent.
            "instructions": self.instructions,
            "input": sent,
            "tools": [self.tool],
            "reasoning": self.reasoning,
            "include": INCLUDE,
            # Required by the preview tool; for GA it drops the oldest items instead of
            # failing once a long session outgrows the context window.
            "truncation": "auto",
            "store": True,  # previous_response_id needs the response stored
        }
        if chain is not None:
            kwargs["previous_response_id"] = chain["response_id"]
        summary = {
            "model": self.model,
            "tool_version": self.version,
            "tools": [self.tool],
            "previous_response_id": chain["response_id"] if chain else None,
            "input_items": len(sent),
            "images": items_.count_images(sent),
            "instructions_chars": len(self.instructions),
            "truncation": "auto",
        }
        return kwargs, summary

    async def send(
        self, items: list[Item], marks: list[Mark], index: int
    ) -> tuple[Response, dict[str, Any], bool]:
        """One model call through the runner's retry policy: (the response, the TurnRecord
        fields of turn `index` with no actions yet, whether the chain was lost)."""
        started = time.monotonic()
        chain = marks[-1] if marks else None
        kwargs, summary = await self.build(items, chain)
        lost = False
        try:
            response = await self.ctx.call_provider(lambda: self._create(kwargs))
        except ProviderError as exc:
            # The API answers 400 previous_response_not_found (a 404 from proxies and
            # older deployments is treated the same).
            if chain is None or not (
                exc.code == "previous_response_not_found" or exc.status_code == 404
            ):
                raise
            # The previous response is gone: resend everything (reasoning items travel
            # with their encrypted content). A second failure is a real error.
            lost = True
            kwargs, summary = await self.build(items, None)
            summary["fallback"] = "previous_response_not_found"
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
        return response, turn, lost

    async def _create(self, kwargs: dict[str, Any]) -> Response:
        response = await self.client.responses.create(**kwargs)
        if not isinstance(response, Response):  # a stream; never asked for
            raise ProviderError("unexpected streaming reply", type_="malformed_response")
        return response
