"""The data of the events the Anthropic loop emits, in one place.

Shapes (all plain JSON, screenshots by reference):
    turn.started        {turn, model}
    assistant.thinking  {text} ({text: null, redacted: true} for redacted thinking)
    assistant.message   {text}
    turn.completed      {turn, usage, latency_ms, stop_reason}
    tool.call           {call_id, tool, action, input}
    tool.result         {call_id, is_error, output, error, screenshot, duration_ms, not_executed}

`tool` is the tool_use block's name as the provider sent it ("computer" for the
beta tools, the action name such as "left_click" for the GA toolset); `action`
is the normalized action (null when the input could not be translated);
`input` is the raw provider input.
"""

from __future__ import annotations

from typing import Any

from app.agents.base import Event, StoredShot

Block = dict[str, Any]


def call_event(tool_use: Block, action: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "call_id": tool_use["id"],
        "tool": tool_use.get("name"),
        "action": action,
        "input": tool_use.get("input") or {},
    }


def result_event(
    call_id: str,
    *,
    is_error: bool,
    output: str | None,
    error: str | None,
    shot: StoredShot | None,
    duration_ms: int,
    executed: bool,
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "is_error": is_error,
        "output": output,
        "error": error,
        "screenshot": shot.to_event() if shot else None,
        "duration_ms": duration_ms,
        # Lets the runner tell the last action executed apart from skipped calls.
        "not_executed": not executed,
    }


def content_events(blocks: list[Block]) -> list[Event]:
    """assistant.thinking / assistant.message events for a response's blocks, in order."""
    events: list[Event] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "thinking" and block.get("thinking"):
            events.append(("assistant.thinking", {"text": block["thinking"]}))
        elif kind == "redacted_thinking":
            events.append(("assistant.thinking", {"text": None, "redacted": True}))
        elif kind == "text" and block.get("text"):
            events.append(("assistant.message", {"text": block["text"]}))
    return events


def usage_of(usage: Any) -> dict[str, int]:
    """The four token counts of an SDK Usage (cache fields may be absent: 0)."""
    return {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
    }
