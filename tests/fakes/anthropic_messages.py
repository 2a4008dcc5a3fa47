"""Message-shaped payloads for the fake Anthropic server.

Three concerns, all pure functions over JSON dicts, kept apart from the HTTP
plumbing in anthropic_server.py:

- builders tests use to script responses (`text_message`, `tool_use_message`,
  `computer_call` for the beta `computer` tool, `toolset_call` for the GA
  `computer_toolset_20260801`);
- `complete_message`, which turns a scripted dict into a full Message the way
  the API would send it (ids, signatures, stop_reason, usage);
- `PromptCache`, a deterministic stand-in for prompt caching, and
  `stream_events`, the SSE rendering of a Message for `stream: true`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

JSON = dict[str, Any]

# Tokens per image, as the docs estimate them: width * height / 750.
_PIXELS_PER_TOKEN = 750
# The API looks back this many blocks from a breakpoint for an earlier cache hit.
_CACHE_LOOKBACK_BLOCKS = 20


def new_id(prefix: str) -> str:
    """An id shaped like the API's (`msg_...`, `toolu_...`, `req_...`)."""
    return f"{prefix}_{secrets.token_urlsafe(18).replace('-', 'A').replace('_', 'b')}"


# --------------------------------------------------------------------- builders


def thinking_block(thinking: str, signature: str | None = None) -> JSON:
    """A thinking block; the server signs it (and remembers the signature) if `signature` is None."""
    block: JSON = {"type": "thinking", "thinking": thinking}
    if signature is not None:
        block["signature"] = signature
    return block


def redacted_thinking_block(data: str | None = None) -> JSON:
    """A redacted_thinking block; opaque `data` is generated when not given."""
    return {"type": "redacted_thinking", "data": data or secrets.token_urlsafe(48)}


def text_message(text: str, *, stop_reason: str = "end_turn", thinking: str | None = None) -> JSON:
    """A scripted assistant message that just says `text`."""
    content: list[JSON] = [thinking_block(thinking)] if thinking is not None else []
    content.append({"type": "text", "text": text})
    return {"content": content, "stop_reason": stop_reason}


def tool_use(
    name: str, input: Mapping[str, Any] | None = None, *, toolset_name: str | None = None
) -> JSON:
    """A tool_use block with a fresh `toolu_` id (read it back as `block["id"]`)."""
    block: JSON = {
        "type": "tool_use",
        "id": new_id("toolu"),
        "name": name,
        "input": dict(input or {}),
    }
    if toolset_name is not None:
        block["toolset_name"] = toolset_name
        # GA toolset members always say who called them; the SDK's typed blocks require it.
        block["caller"] = {"type": "direct"}
    return block


def computer_call(action: str, **input: Any) -> JSON:
    """A beta computer tool call: one tool named "computer", `input.action` selects the action."""
    return tool_use("computer", {"action": action, **input})


def toolset_call(action: str, **input: Any) -> JSON:
    """A GA computer_toolset_20260801 call: the block's `name` is the action itself."""
    return tool_use(action, input, toolset_name="computer")


def tool_use_message(
    *tool_uses: JSON,
    text: str | None = None,
    thinking: str | JSON | Iterable[str | JSON] | None = None,
    stop_reason: str = "tool_use",
) -> JSON:
    """A scripted assistant message: thinking block(s), optional text, then the tool calls in order.

    `thinking` may be a string, a ready block (thinking or redacted_thinking), or a list of either.
    """
    content: list[JSON] = []
    if thinking is not None:
        items = [thinking] if isinstance(thinking, str | dict) else list(thinking)
        content.extend(thinking_block(t) if isinstance(t, str) else dict(t) for t in items)
    if text is not None:
        content.append({"type": "text", "text": text})
    content.extend(dict(t) for t in tool_uses)
    return {"content": content, "stop_reason": stop_reason}


# ------------------------------------------------------------ response completion


class Signatures:
    """What the server has issued: thinking signatures (-> their exact text) and redacted data.

    Not thread-safe on its own; the server calls it under its lock.
    """

    def __init__(self) -> None:
        self.thinking: dict[str, str] = {}
        self.redacted: set[str] = set()
        # tool_use id -> the thinking blocks of the message that issued it, so the server
        # can tell when a client drops thinking from the turn it is answering.
        self.thinking_by_tool_use: dict[str, list[JSON]] = {}

    def sign(self, thinking: str) -> str:
        digest = hashlib.sha256(secrets.token_bytes(16) + thinking.encode()).hexdigest()
        return f"fakesig_{digest}"


def complete_message(scripted: Mapping[str, Any], *, model: str, signatures: Signatures) -> JSON:
    """Fill what the real API always sends, and register thinking blocks for later checks."""
    message = copy.deepcopy(dict(scripted))
    content: list[JSON] = message.setdefault("content", [])
    thinking_blocks: list[JSON] = []
    for block in content:
        kind = block.get("type")
        if kind == "tool_use":
            block.setdefault("id", new_id("toolu"))
            block.setdefault("input", {})
        elif kind == "thinking":
            block.setdefault("signature", signatures.sign(block["thinking"]))
            signatures.thinking[block["signature"]] = block["thinking"]
            thinking_blocks.append(dict(block))
        elif kind == "redacted_thinking":
            block.setdefault("data", secrets.token_urlsafe(48))
            signatures.redacted.add(block["data"])
            thinking_blocks.append(dict(block))
        elif kind == "text":
            block.setdefault("citations", None)
    for block in content:
        if block.get("type") == "tool_use":
            signatures.thinking_by_tool_use[block["id"]] = thinking_blocks
    has_tool_use = any(b.get("type") == "tool_use" for b in content)
    message.setdefault("id", new_id("msg"))
    message["type"] = "message"
    message["role"] = "assistant"
    message.setdefault("model", model)
    message.setdefault("stop_reason", "tool_use" if has_tool_use else "end_turn")
    message.setdefault("stop_sequence", None)
    return message


def output_tokens(content: list[JSON]) -> int:
    return max(1, _chars(content, {}) // 4)


# -------------------------------------------------------------------- token usage


def _chars(value: Any, image_sizes: Mapping[int, tuple[int, int]]) -> int:
    """Rough size of a JSON value in characters, images counted by their pixels, not their bytes."""
    if isinstance(value, dict):
        if value.get("type") == "image" and isinstance(value.get("source"), dict):
            width, height = image_sizes.get(id(value["source"]), (0, 0))
            return 4 * max(1, width * height // _PIXELS_PER_TOKEN)
        return sum(
            len(str(k)) + _chars(v, image_sizes) for k, v in value.items() if k != "cache_control"
        )
    if isinstance(value, list):
        return sum(_chars(v, image_sizes) for v in value)
    return len(str(value))


def _segments(body: Mapping[str, Any]) -> list[tuple[Any, bool]]:
    """The prompt as cacheable blocks in the API's prefix order (tools, system, messages),
    each with whether a cache_control breakpoint sits on it."""
    out: list[tuple[Any, bool]] = []

    def marked(block: Any) -> bool:
        if not isinstance(block, dict):
            return False
        if block.get("cache_control"):
            return True
        inner = block.get("content")
        return isinstance(inner, list) and any(
            isinstance(b, dict) and b.get("cache_control") for b in inner
        )

    for tool in body.get("tools") or []:
        out.append((tool, marked(tool)))
    system = body.get("system")
    if isinstance(system, str) and system:
        out.append((system, False))
    elif isinstance(system, list):
        out.extend((block, marked(block)) for block in system)
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else content or []
        for block in blocks:
            out.append(({"role": message.get("role"), "block": block}, marked(block)))
    if body.get("cache_control") and out:
        # Top-level cache_control marks the last cacheable block.
        out[-1] = (out[-1][0], True)
    return out


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


class PromptCache:
    """Deterministic prompt caching: breakpoints write prefix hashes; a later request whose prefix
    hash (at a breakpoint or up to 20 blocks before it) was written reads that prefix from cache.

    Moving a breakpoint does not change a prefix's hash, but editing any block before it does,
    which is exactly what makes pruning old screenshots one at a time expensive.
    """

    def __init__(self) -> None:
        self._written: set[str] = set()

    def usage(self, body: Mapping[str, Any], image_sizes: Mapping[int, tuple[int, int]]) -> JSON:
        segments = _segments(body)
        tokens = [max(1, _chars(seg, image_sizes) // 4) for seg, _ in segments]
        total = sum(tokens) or 1
        rolling = hashlib.sha256(str(body.get("model")).encode())
        hashes: list[str] = []
        for seg, _ in segments:
            rolling.update(json.dumps(_strip_cache_control(seg), sort_keys=True).encode())
            hashes.append(rolling.copy().hexdigest())
        breakpoints = [i for i, (_, mark) in enumerate(segments) if mark]
        read_upto = -1
        for bp in breakpoints:
            for i in range(bp, max(-1, bp - _CACHE_LOOKBACK_BLOCKS - 1), -1):
                if hashes[i] in self._written:
                    read_upto = max(read_upto, i)
                    break
        cache_read = sum(tokens[: read_upto + 1])
        cache_write = sum(tokens[read_upto + 1 : breakpoints[-1] + 1]) if breakpoints else 0
        self._written.update(hashes[bp] for bp in breakpoints)
        return {
            "input_tokens": max(0, total - cache_read - cache_write),
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_write,
                "ephemeral_1h_input_tokens": 0,
            },
            "service_tier": "standard",
        }


# ---------------------------------------------------------------------- streaming


def _sse(event: str, data: JSON) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(message: Mapping[str, Any]) -> list[bytes]:
    """Render a complete Message as the SSE events of a `stream: true` response."""
    usage = dict(message["usage"])
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        kind = block.get("type")
        delta: JSON | None = None
        extra: list[JSON] = []
        if kind == "text":
            head = {**block, "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        elif kind == "thinking":
            head = {**block, "thinking": "", "signature": ""}
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            extra = [{"type": "signature_delta", "signature": block["signature"]}]
        elif kind == "tool_use":
            head = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            head = dict(block)
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": head},
            )
        )
        for d in [delta, *extra] if delta else []:
            events.append(
                _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": d},
                )
            )
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                },
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events
