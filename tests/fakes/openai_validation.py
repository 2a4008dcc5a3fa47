"""Shape validation for the fake OpenAI Responses server, modelled on the API's 400s.

`validate_request` checks one `POST /v1/responses` body on its own (fields,
tools, reasoning, include, the shape of every input item and its images) and
raises `ApiError` on the first problem, with the API's `param` path
(`tools[0].environment`, `input[2].output.image_url`). What depends on earlier
responses (chaining, pending calls, safety checks, reasoning items) is
checked by openai_state.py.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from tests.fakes.openai_errors import (
    invalid,
    invalid_type,
    invalid_value,
    missing_parameter,
    unknown_parameter,
)

JSON = dict[str, Any]

# The create parameters of the SDK's ResponseCreateParamsBase, plus `stream`.
TOP_LEVEL_FIELDS = frozenset(
    "access_programs background context_management conversation image include input "
    "instructions max_output_tokens max_tool_calls metadata model moderation parallel_tool_calls "
    "previous_response_id prompt prompt_cache_key prompt_cache_options prompt_cache_retention "
    "reasoning safety_identifier service_tier store stream stream_options temperature text "
    "tool_choice tools top_logprobs top_p truncation user".split()
)
# Every `type` of the SDK's ToolParam union. The fake checks the computer tools closely and
# accepts the others as they come.
TOOL_TYPES = (
    "function file_search computer computer_use_preview web_search web_search_2025_08_26 mcp "
    "code_interpreter programmatic_tool_calling image_generation local_shell shell custom "
    "namespace tool_search web_search_preview web_search_preview_2025_03_11 apply_patch".split()
)
ENVIRONMENTS = ("browser", "mac", "windows", "linux", "ubuntu")
INCLUDABLES = (
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
)
REASONING_FIELDS = frozenset({"effort", "summary", "generate_summary", "context", "mode"})
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SUMMARIES = ("auto", "concise", "detailed")
# The input item types the fake models; any other is rejected rather than silently ignored.
ITEM_TYPES = ("message", "reasoning", "computer_call", "computer_call_output", "item_reference")
_ITEM_FIELDS = {
    "message": frozenset({"type", "role", "content", "status", "id", "phase"}),
    "reasoning": frozenset({"type", "id", "summary", "content", "encrypted_content", "status"}),
    "computer_call": frozenset(
        {"type", "id", "call_id", "status", "pending_safety_checks", "action", "actions"}
    ),
    "computer_call_output": frozenset(
        {"type", "id", "call_id", "output", "acknowledged_safety_checks", "status"}
    ),
    "item_reference": frozenset({"type", "id"}),
}
# computer_call fields the SDK's ResponseComputerToolCallParam marks Required.
_CALL_REQUIRED = ("id", "call_id", "pending_safety_checks", "status")
_ROLES = ("user", "assistant", "system", "developer")
_CONTENT_TYPES = ("input_text", "input_image", "input_file", "output_text", "refusal")
_DATA_URL = re.compile(r"data:(image/[a-z]+);base64,(.*)", re.DOTALL)
_IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}


@dataclass
class RequestFacts:
    """What validation learnt that the rest of the server needs."""

    items: list[JSON] = field(default_factory=list)  # `input` as a list of typed items
    tool_types: frozenset[str] = frozenset()
    image_sizes: list[tuple[int, int]] = field(default_factory=list)


def validate_request(body: Any) -> RequestFacts:
    """Check a /v1/responses body's shape; raise ApiError on the first problem."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for key in body:
        if key not in TOP_LEVEL_FIELDS:
            raise unknown_parameter(key)
    for key in ("model", "input"):
        if key not in body:
            raise missing_parameter(key)
    if not isinstance(body["model"], str) or not body["model"]:
        raise invalid_type("model", "a string", body["model"])
    if body.get("stream"):
        raise invalid("FakeOpenAI does not implement streaming: send stream=false.", "stream")
    _check_scalars(body)
    _check_reasoning(body.get("reasoning"))
    _check_include(body.get("include"))
    facts = RequestFacts()
    facts.tool_types = _check_tools(body.get("tools"), body.get("truncation"))
    facts.items = _input_items(body["input"])
    for i, item in enumerate(facts.items):
        _check_item(item, f"input[{i}]", facts)
    return facts


def _check_scalars(body: JSON) -> None:
    kinds: dict[str, tuple[type | tuple[type, ...], str]] = {
        "previous_response_id": (str, "a string"),
        "instructions": (str, "a string"),
        "store": (bool, "a boolean"),
        "parallel_tool_calls": (bool, "a boolean"),
        "metadata": (dict, "an object"),
        "max_output_tokens": (int, "an integer"),
    }
    for key, (kind, expected) in kinds.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise invalid_type(key, expected, value)
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise invalid_value("truncation", body["truncation"], ("auto", "disabled"))
    tokens = body.get("max_output_tokens")
    if tokens is not None and tokens < 16:
        raise invalid(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
            f"but got {tokens} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )


def _check_reasoning(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid_type("reasoning", "an object", value)
    for key in value:
        if key not in REASONING_FIELDS:
            raise unknown_parameter(f"reasoning.{key}")
    if value.get("effort") not in (None, *EFFORTS):
        raise invalid_value("reasoning.effort", value["effort"], EFFORTS)
    for key in ("summary", "generate_summary"):
        if value.get(key) not in (None, *SUMMARIES):
            raise invalid_value(f"reasoning.{key}", value[key], SUMMARIES)


def _check_include(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise invalid_type("include", "an array", value)
    for i, entry in enumerate(value):
        if entry not in INCLUDABLES:
            raise invalid_value(f"include[{i}]", entry, INCLUDABLES)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_tools(tools: Any, truncation: Any) -> frozenset[str]:
    if tools is None:
        return frozenset()
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    types: list[str] = []
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid_type(path, "an object", tool)
        if "type" not in tool:
            raise missing_parameter(f"{path}.type")
        kind = tool["type"]
        if kind not in TOOL_TYPES:
            raise invalid_value(f"{path}.type", kind, TOOL_TYPES)
        types.append(kind)
        if kind == "computer_use_preview":
            _check_preview_tool(tool, path, truncation)
        elif kind == "computer":
            # The GA tool is just its type: the display size comes from the screenshots.
            for key in tool:
                if key != "type":
                    raise unknown_parameter(f"{path}.{key}")
    computers = [t for t in types if t in ("computer", "computer_use_preview")]
    if len(computers) > 1:
        raise invalid("Only one computer tool may be provided.", "tools")
    return frozenset(types)


def _check_preview_tool(tool: JSON, path: str, truncation: Any) -> None:
    for key in tool:
        if key not in ("type", "display_width", "display_height", "environment"):
            raise unknown_parameter(f"{path}.{key}")
    for key in ("display_width", "display_height", "environment"):
        if key not in tool:
            raise missing_parameter(f"{path}.{key}")
    for key in ("display_width", "display_height"):
        if not _positive_int(tool[key]):
            raise invalid_type(f"{path}.{key}", "a positive integer", tool[key])
    if tool["environment"] not in ENVIRONMENTS:
        raise invalid_value(f"{path}.environment", tool["environment"], ENVIRONMENTS)
    if truncation != "auto":
        raise invalid(
            "The computer_use_preview tool requires 'truncation' to be set to 'auto'.",
            "truncation",
        )


# ------------------------------------------------------------------- input items


def _input_items(value: Any) -> list[JSON]:
    """`input` as a list of items: a string is one user message, and an item without a
    `type` is a message when it has a role, else an item_reference (the SDK's easy forms)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise invalid_type("input", "a string or an array", value)
    items: list[JSON] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid_type(f"input[{i}]", "an object", item)
        if item.get("type") is None:
            kind = "message" if "role" in item else "item_reference"
            item = {**item, "type": kind}
        items.append(item)
    return items


def _check_item(item: JSON, path: str, facts: RequestFacts) -> None:
    kind = item["type"]
    if kind not in ITEM_TYPES:
        raise invalid_value(f"{path}.type", kind, ITEM_TYPES)
    for key in item:
        if key not in _ITEM_FIELDS[kind]:
            raise unknown_parameter(f"{path}.{key}")
    if kind == "message":
        _check_message(item, path, facts)
    elif kind == "reasoning":
        _require_str(item, "id", path)
        summary = item.get("summary")
        if not isinstance(summary, list):
            raise missing_parameter(f"{path}.summary")
        for j, part in enumerate(summary):
            if not isinstance(part, dict) or part.get("type") != "summary_text":
                raise invalid_value(f"{path}.summary[{j}].type", _type_of(part), ("summary_text",))
    elif kind == "computer_call":
        for key in _CALL_REQUIRED:
            if key not in item:
                raise missing_parameter(f"{path}.{key}")
        if ("action" in item) == ("actions" in item):
            raise invalid(
                f"A computer_call must have exactly one of 'action' or 'actions' ({path}).", path
            )
    elif kind == "computer_call_output":
        _require_str(item, "call_id", path)
        _check_screenshot(item.get("output"), f"{path}.output", facts)
        acks = item.get("acknowledged_safety_checks")
        if acks is not None:
            if not isinstance(acks, list):
                raise invalid_type(f"{path}.acknowledged_safety_checks", "an array", acks)
            for j, ack in enumerate(acks):
                if not isinstance(ack, dict) or not isinstance(ack.get("id"), str):
                    raise missing_parameter(f"{path}.acknowledged_safety_checks[{j}].id")
    else:  # item_reference
        _require_str(item, "id", path)


def _type_of(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else value


def _require_str(item: JSON, key: str, path: str) -> None:
    if key not in item:
        raise missing_parameter(f"{path}.{key}")
    if not isinstance(item[key], str) or not item[key]:
        raise invalid_type(f"{path}.{key}", "a string", item[key])


def _check_message(item: JSON, path: str, facts: RequestFacts) -> None:
    if item.get("role") not in _ROLES:
        raise invalid_value(f"{path}.role", item.get("role"), _ROLES)
    if "content" not in item:
        raise missing_parameter(f"{path}.content")
    content = item["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(f"{path}.content", "a string or an array", content)
    for j, part in enumerate(content):
        where = f"{path}.content[{j}]"
        kind = _type_of(part)
        if kind not in _CONTENT_TYPES:
            raise invalid_value(f"{where}.type", kind, _CONTENT_TYPES)
        if kind in ("input_text", "output_text") and not isinstance(part.get("text"), str):
            raise missing_parameter(f"{where}.text")
        if kind == "input_image" and part.get("image_url") is not None:
            facts.image_sizes.append(_decode_image(part["image_url"], f"{where}.image_url"))


def _check_screenshot(output: Any, path: str, facts: RequestFacts) -> None:
    if output is None:
        raise missing_parameter(path)
    if not isinstance(output, dict):
        raise invalid_type(path, "an object", output)
    for key in output:
        # `current_url` (an old sample app's habit) is not part of the API's screenshot object.
        if key not in ("type", "image_url", "file_id"):
            raise unknown_parameter(f"{path}.{key}")
    if output.get("type") != "computer_screenshot":
        raise invalid_value(f"{path}.type", output.get("type"), ("computer_screenshot",))
    if "image_url" not in output:
        raise invalid(
            f"FakeOpenAI needs the screenshot inline: '{path}.image_url' must be a data URL "
            "(file_id is not supported here).",
            f"{path}.image_url",
        )
    facts.image_sizes.append(_decode_image(output["image_url"], f"{path}.image_url"))


def _decode_image(url: Any, param: str) -> tuple[int, int]:
    """The (width, height) of a base64 PNG or JPEG data URL; 400 unless it really is one."""
    if not isinstance(url, str):
        raise invalid_type(param, "a string", url)
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise invalid(
            f"Invalid '{param}': expected a base64-encoded data URL with an image MIME type "
            "(e.g. 'data:image/png;base64,...'). FakeOpenAI does not fetch remote URLs.",
            param,
            "invalid_value",
        )
    media_type, data = match.groups()
    if media_type not in _IMAGE_FORMATS:
        raise invalid(
            f"Invalid '{param}': unsupported image media type {media_type!r}; use image/png "
            "or image/jpeg.",
            param,
            "invalid_image_format",
        )
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()  # decode fully: a truncated file must fail here, not later
            found, size = image.format, image.size
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
        raise invalid(
            f"Invalid '{param}': the image data could not be decoded as {media_type}.",
            param,
            "invalid_image",
        ) from None
    if found != _IMAGE_FORMATS[media_type]:
        raise invalid(
            f"Invalid '{param}': the image data is {found}, not the declared {media_type}.",
            param,
            "invalid_image",
        )
    return size
