"""The data of the events the OpenAI loop emits, in one place.

Shapes are those of the Anthropic loop (anthropic_events.py), so a client
reads both providers the same way:
    turn.started        {turn, model}
    assistant.thinking  {text}: a reasoning item's summary (items without one emit nothing)
    assistant.message   {text}: an assistant message's output_text (or refusal) parts
    turn.completed      {turn, usage, latency_ms, stop_reason}
    tool.call           {call_id, tool, action, input}
    tool.result         {call_id, is_error, output, error, screenshot, duration_ms, not_executed}

`tool` is "computer_use_preview" or "computer"; `input` is the raw wire action.
A GA computer_call batches several actions under one call_id: each action gets
its own tool.call/tool.result pair, in order and strictly interleaved, so the
pairs of one call share the provider's call_id (as its safety checks do) and
the screenshot sent back to the model rides on the last tool.result of the call.
`stop_reason` in turn.completed is the response's `status` ("completed"), the
`incomplete_details.reason` of an incomplete one ("max_output_tokens",
"content_filter"), or "refusal" when the model refused.
"""

from __future__ import annotations

from typing import Any

# Provider-neutral: the tool.result shape is shared with the Anthropic loop.
from app.agents.anthropic_events import result_event
from app.agents.base import Event
from app.agents.openai_items import Item, message_texts

__all__ = ["call_event", "content_events", "result_event", "usage_of"]


def call_event(
    call_id: str, tool: str, raw: dict[str, Any], action: dict[str, Any] | None
) -> dict[str, Any]:
    return {"call_id": call_id, "tool": tool, "action": action, "input": raw}


def content_events(output: list[Item]) -> list[Event]:
    """assistant.thinking / assistant.message events for a response's output, in order."""
    events: list[Event] = []
    for item in output:
        kind = item.get("type")
        if kind == "reasoning":
            parts = [p.get("text") for p in item.get("summary") or []]
            text = "\n\n".join(p for p in parts if isinstance(p, str) and p)
            if text:
                events.append(("assistant.thinking", {"text": text}))
        elif kind == "message":
            text = "\n\n".join(message_texts(item))
            if text:
                events.append(("assistant.message", {"text": text}))
    return events


def usage_of(usage: Any) -> dict[str, int]:
    """The four token counts of an SDK ResponseUsage. OpenAI caches prompts on its own and
    bills no cache writes: cache_creation_input_tokens is always 0."""
    if usage is None:
        return {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
    details = getattr(usage, "input_tokens_details", None)
    return {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
        "cache_read_input_tokens": (getattr(details, "cached_tokens", 0) or 0),
        "cache_creation_input_tokens": 0,
    }
