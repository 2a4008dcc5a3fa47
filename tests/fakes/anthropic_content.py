"""Validation of `messages`, the part of a Messages API request the agent loop builds turn by turn.

The API merges consecutive messages of one role into a turn; the rules below are
checked on those turns: every `tool_use` answered by a `tool_result` in the very
next user turn (results first, ids matching, `toolset_name` carried for GA toolset
calls), thinking blocks returned exactly as issued, images well-formed and within
the size and count limits, text blocks non-empty.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.fakes.anthropic_errors import invalid
from tests.fakes.anthropic_messages import Signatures

JSON = dict[str, Any]

MAX_IMAGES = 100
MAX_IMAGE_EDGE = 8000
# Once a request carries more than this many images, each one is held to MANY_IMAGES_EDGE.
MANY_IMAGES = 20
MANY_IMAGES_EDGE = 2000
TOOLSET = "computer_toolset_20260801"
TOOLSET_MEMBERS = frozenset(
    "key hold_key type cursor_position mouse_move left_mouse_down left_mouse_up left_click "
    "left_click_drag right_click middle_click double_click triple_click scroll wait screenshot zoom".split()
)
_MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}
_USER_BLOCKS = frozenset(
    {"text", "image", "document", "search_result", "tool_result", "container_upload"}
)
_ASSISTANT_BLOCKS = frozenset(
    {
        "text",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
        "compaction",
    }
)
_TOOL_RESULT_CONTENT = frozenset(
    {"text", "image", "document", "search_result", "tool_reference", "browser_state"}
)


@dataclass
class RequestFacts:
    """What validation learned that the server reuses (image sizes for token estimates)."""

    image_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    betas: frozenset[str] = frozenset()
    tool_types: frozenset[str] = frozenset()


@dataclass
class _Turn:
    """Consecutive messages of one role, merged as the API merges them."""

    role: str
    first_index: int
    blocks: list[tuple[str, JSON]] = field(default_factory=list)  # (path, block)


class CacheCounter:
    """Counts cache_control breakpoints (the API allows four) and checks their shape."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, cache_control: Any, path: str) -> None:
        if cache_control is None:
            return
        if not isinstance(cache_control, dict) or cache_control.get("type") != "ephemeral":
            raise invalid(f"{path}.type: Input should be 'ephemeral'")
        if cache_control.get("ttl", "5m") not in ("5m", "1h"):
            raise invalid(f"{path}.ttl: Input should be '5m' or '1h'")
        self.count += 1


def validate_text(block: JSON, path: str, breakpoints: CacheCounter) -> None:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid(f"{path}.text: Field required")
    if not text:
        raise invalid(f"{path}: text content blocks must be non-empty")
    breakpoints.add(block.get("cache_control"), f"{path}.cache_control")


def _merge_turns(messages: list[Any]) -> list[_Turn]:
    turns: list[_Turn] = []
    last = len(messages) - 1
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(f"{path}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise invalid(f"{path}.role: Input should be 'user', 'assistant' or 'system'")
        if "content" not in message:
            raise invalid(f"{path}.content: Field required")
        content = message["content"]
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            blocks = content
        else:
            raise invalid(
                f"{path}.content: Input should be a valid string or list of content blocks"
            )
        if not blocks and not (role == "assistant" and i == last):
            raise invalid(
                f"{path}: all messages must have non-empty content except for the optional final assistant message"
            )
        if i == 0 and role != "user":
            raise invalid('messages: first message must use the "user" role')
        if not turns or turns[-1].role != role:
            turns.append(_Turn(role, i))
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise invalid(f"{path}.content.{j}.type: Field required")
            turns[-1].blocks.append((f"{path}.content.{j}", block))
    return turns


def validate_messages(
    messages: Any,
    facts: RequestFacts,
    breakpoints: CacheCounter,
    signatures: Signatures,
    thinking_on: bool,
) -> None:
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    turns = _merge_turns(messages)
    images: list[tuple[str, int, int]] = []
    has_tool_blocks = False
    tool_use_ids: set[str] = set()
    for turn in turns:
        allowed = {
            "user": _USER_BLOCKS,
            "assistant": _ASSISTANT_BLOCKS,
            "system": frozenset({"text"}),
        }[turn.role]
        for path, block in turn.blocks:
            kind = block["type"]
            if kind not in allowed:
                raise invalid(
                    f"{path}.type: '{kind}' blocks are not allowed in '{turn.role}' messages"
                )
            has_tool_blocks |= kind in ("tool_use", "tool_result")
            if kind == "text":
                validate_text(block, path, breakpoints)
            elif kind == "image":
                images.append(_validate_image(block, path, facts))
                breakpoints.add(block.get("cache_control"), f"{path}.cache_control")
            elif kind == "thinking":
                if signatures.thinking.get(block.get("signature", "")) != block.get("thinking"):
                    raise invalid(f"{path}: Invalid signature in thinking block")
                if block.get("cache_control") is not None:
                    raise invalid(
                        f"{path}.cache_control: thinking blocks cannot be cached directly"
                    )
            elif kind == "redacted_thinking":
                if block.get("data") not in signatures.redacted:
                    raise invalid(f"{path}: Invalid data in redacted_thinking block")
            elif kind == "tool_use":
                _validate_tool_use(block, path, facts, tool_use_ids)
                breakpoints.add(block.get("cache_control"), f"{path}.cache_control")
            elif kind == "tool_result":
                images.extend(_validate_tool_result(block, path, facts, breakpoints))
            else:
                breakpoints.add(block.get("cache_control"), f"{path}.cache_control")
    if has_tool_blocks and not facts.tool_types:
        raise invalid(
            "Requests which include `tool_use` or `tool_result` blocks must define tools."
        )
    _validate_tool_pairing(turns)
    if thinking_on:
        _validate_kept_thinking(turns, signatures)
    _validate_image_limits(images)


def _validate_tool_use(block: JSON, path: str, facts: RequestFacts, seen: set[str]) -> None:
    tool_id, name = block.get("id"), block.get("name")
    if not isinstance(tool_id, str) or not tool_id:
        raise invalid(f"{path}.id: Field required")
    if not isinstance(name, str) or not name:
        raise invalid(f"{path}.name: Field required")
    if not isinstance(block.get("input"), dict):
        raise invalid(f"{path}.input: Input should be a valid dictionary")
    if tool_id in seen:
        raise invalid(f"{path}: `tool_use` ids must be unique")
    seen.add(tool_id)
    toolset = block.get("toolset_name")
    if toolset is not None:
        if toolset != "computer" or name not in TOOLSET_MEMBERS:
            raise invalid(f"{path}: unknown toolset member '{toolset}.{name}'")
        if TOOLSET not in facts.tool_types:
            raise invalid(
                f"{path}: tool_use of toolset 'computer' but no {TOOLSET} tool is declared"
            )


def _validate_tool_result(
    block: JSON, path: str, facts: RequestFacts, breakpoints: CacheCounter
) -> list[tuple[str, int, int]]:
    if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
        raise invalid(f"{path}.tool_use_id: Field required")
    if "is_error" in block and not isinstance(block["is_error"], bool):
        raise invalid(f"{path}.is_error: Input should be a valid boolean")
    breakpoints.add(block.get("cache_control"), f"{path}.cache_control")
    content = block.get("content")
    if content is None or isinstance(content, str):
        return []
    if not isinstance(content, list):
        raise invalid(f"{path}.content: Input should be a valid string or list")
    images = []
    for k, inner in enumerate(content):
        inner_path = f"{path}.content.{k}"
        kind = inner.get("type") if isinstance(inner, dict) else None
        if kind not in _TOOL_RESULT_CONTENT:
            raise invalid(
                f"{inner_path}.type: Input tag '{kind}' found using 'type' does not match any of the expected tags"
            )
        if kind == "text":
            validate_text(inner, inner_path, breakpoints)
        else:
            breakpoints.add(inner.get("cache_control"), f"{inner_path}.cache_control")
        if kind == "image":
            images.append(_validate_image(inner, inner_path, facts))
    return images


def _validate_image(block: JSON, path: str, facts: RequestFacts) -> tuple[str, int, int]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{path}.source: Field required")
    if source.get("type") != "base64":
        # url and file sources exist, but the fake cannot check them and the service never sends them.
        raise invalid(f"{path}.source.type: the fake accepts only 'base64' image sources")
    media_type = source.get("media_type")
    if media_type not in _MEDIA_TYPES:
        raise invalid(
            f"{path}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        )
    data = source.get("data")
    if not isinstance(data, str) or not data:
        raise invalid(f"{path}.source.data: Field required")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{path}.source.data: invalid base64 data") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            actual, (width, height) = image.format, image.size
    except Exception:
        raise invalid(f"{path}.source.data: Could not process image") from None
    if actual != _MEDIA_TYPES[media_type]:
        raise invalid(f"{path}.source: Image does not match the provided media type {media_type}")
    if max(width, height) > MAX_IMAGE_EDGE:
        raise invalid(
            f"{path}.source: At least one of the image dimensions exceed max allowed size: {MAX_IMAGE_EDGE} pixels"
        )
    facts.image_sizes[id(source)] = (width, height)
    return path, width, height


def _validate_image_limits(images: list[tuple[str, int, int]]) -> None:
    if len(images) > MAX_IMAGES:
        raise invalid(
            f"messages: Too many images: {len(images)} images were provided, the maximum is {MAX_IMAGES}"
        )
    if len(images) > MANY_IMAGES:
        for path, width, height in images:
            if max(width, height) > MANY_IMAGES_EDGE:
                raise invalid(
                    f"{path}.source: At least one of the image dimensions exceed max allowed size for "
                    f"many-image requests: {MANY_IMAGES_EDGE} pixels"
                )


def _validate_tool_pairing(turns: list[_Turn]) -> None:
    """Every tool_use is answered in the very next (user) turn, results first, ids matching.

    Turns are checked in order so the first broken message is the one reported.
    """
    for t, turn in enumerate(turns):
        if turn.role == "assistant":
            _check_answered(turn, turns[t + 1] if t + 1 < len(turns) else None)
        elif turn.role == "user":
            _check_results(
                turn, turns[t - 1] if t > 0 and turns[t - 1].role == "assistant" else None
            )


def _check_answered(assistant: _Turn, following: _Turn | None) -> None:
    ids = [b["id"] for _, b in assistant.blocks if b["type"] == "tool_use"]
    answered: set[str] = set()
    if following is not None and following.role == "user":
        answered = {b["tool_use_id"] for _, b in following.blocks if b["type"] == "tool_result"}
    missing = [i for i in ids if i not in answered]
    if missing:
        raise invalid(
            f"messages.{assistant.first_index}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
            "`tool_result` block in the next message."
        )


def _check_results(user: _Turn, previous: _Turn | None) -> None:
    uses = {b["id"]: b for _, b in previous.blocks if b["type"] == "tool_use"} if previous else {}
    seen_other = False
    answered: set[str] = set()
    for path, block in user.blocks:
        if block["type"] != "tool_result":
            seen_other = True
            continue
        if seen_other:
            raise invalid(
                f"{path}: tool_result blocks must come first in a user message, before any other content"
            )
        use_id = block["tool_use_id"]
        if use_id not in uses:
            raise invalid(
                f"{path}: unexpected `tool_use_id` found in `tool_result` blocks: {use_id}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        if use_id in answered:
            raise invalid(f"{path}: duplicate `tool_result` for tool_use_id {use_id}")
        answered.add(use_id)
        expected = uses[use_id].get("toolset_name")
        if block.get("toolset_name") != expected:
            want = (
                f"must carry toolset_name '{expected}'"
                if expected
                else "must not carry a toolset_name"
            )
            raise invalid(f"{path}: the tool_result for `tool_use` {use_id} {want}")


def _validate_kept_thinking(turns: list[_Turn], signatures: Signatures) -> None:
    """With thinking on, the assistant turn being answered with tool results must still start with
    the thinking blocks the server issued alongside those tool calls."""
    if len(turns) < 2 or turns[-1].role != "user" or turns[-2].role != "assistant":
        return
    assistant = turns[-2]
    issued: list[JSON] = []
    for _, block in assistant.blocks:
        if block["type"] == "tool_use" and block["id"] in signatures.thinking_by_tool_use:
            issued = signatures.thinking_by_tool_use[block["id"]]
            break
    if not issued:
        return
    sent = [b for _, b in assistant.blocks if b["type"] in ("thinking", "redacted_thinking")]
    first_path, first = assistant.blocks[0]
    if first["type"] not in ("thinking", "redacted_thinking") or sent[: len(issued)] != issued:
        raise invalid(
            f"{first_path}.type: Expected `thinking` or `redacted_thinking`, but found `{first['type']}`. "
            "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
            "(preceding the lastmost set of `tool_use` and `tool_result` blocks)."
        )
