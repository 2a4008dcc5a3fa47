"""Request validation for the fake Anthropic server, modelled on the real API's 400s.

`validate_request` raises `ApiError` on the first problem it finds and otherwise
returns `RequestFacts` the server needs for usage. Messages name the offending
field the way the API does (`tools.0.name: ...`, `messages.2.content.0: ...`),
so a failing test points at what the loop got wrong. This module checks the
request's frame (fields, system, tools, thinking); anthropic_content.py checks
`messages`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.fakes.anthropic_content import (
    TOOLSET,
    TOOLSET_MEMBERS,
    CacheCounter,
    RequestFacts,
    validate_messages,
    validate_text,
)
from tests.fakes.anthropic_errors import invalid
from tests.fakes.anthropic_messages import Signatures

JSON = dict[str, Any]

MAX_CACHE_BREAKPOINTS = 4
MIN_THINKING_BUDGET = 1024

BETA_COMPUTER_TOOLS = {
    "computer_20241022": "computer-use-2024-10-22",
    "computer_20250124": "computer-use-2025-01-24",
    "computer_20251124": "computer-use-2025-11-24",
}
_BETA_COMPUTER_FIELDS = frozenset(
    "type name display_width_px display_height_px display_number cache_control allowed_callers "
    "defer_loading input_examples strict".split()
)
_CUSTOM_TOOL_FIELDS = frozenset(
    "type name description input_schema cache_control allowed_callers defer_loading input_examples strict eager_input_streaming".split()
)
# Server and client tools the fake does not model but must not reject.
_OTHER_TOOL_TYPES = re.compile(
    r"^(bash|text_editor|web_search|web_fetch|code_execution|memory|tool_search_tool_(bm25|regex)|browser_toolset)_\d{8}$|^mcp_toolset$"
)
_TOP_LEVEL_FIELDS = frozenset(
    "model max_tokens messages system tools tool_choice thinking metadata stop_sequences stream "
    "temperature top_p top_k service_tier cache_control container diagnostics inference_geo "
    "output_config speed billing_policy compaction context_management fallback_credit_token "
    "fallbacks mcp_servers thread".split()
)


def parse_betas(headers: Mapping[str, str]) -> frozenset[str]:
    raw = headers.get("anthropic-beta", "")
    return frozenset(b.strip() for b in raw.split(",") if b.strip())


def validate_request(body: Any, headers: Mapping[str, str], signatures: Signatures) -> RequestFacts:
    """Check a /v1/messages body; raise ApiError on the first problem."""
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")
    for key in body:
        if key not in _TOP_LEVEL_FIELDS:
            raise invalid(f"{key}: Extra inputs are not permitted")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise invalid(f"{key}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise invalid("model: Input should be a non-empty string")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise invalid("max_tokens: Input should be a valid integer greater than or equal to 0")

    facts = RequestFacts(betas=parse_betas(headers))
    breakpoints = CacheCounter()
    if body.get("cache_control") is not None:
        breakpoints.add(body["cache_control"], "cache_control")
    _validate_system(body.get("system"), breakpoints)
    facts.tool_types = _validate_tools(body.get("tools"), facts.betas, breakpoints)
    thinking_on = _validate_thinking(body, max_tokens)
    _validate_tool_choice(body.get("tool_choice"), thinking_on)
    validate_messages(body["messages"], facts, breakpoints, signatures, thinking_on)
    if breakpoints.count > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints.count}."
        )
    return facts


def _validate_system(system: Any, breakpoints: CacheCounter) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or list of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"system.{i}.type: Input should be 'text'")
        validate_text(block, f"system.{i}", breakpoints)


def _validate_tools(tools: Any, betas: frozenset[str], breakpoints: CacheCounter) -> frozenset[str]:
    if tools is None:
        return frozenset()
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    names: set[str] = set()
    types: set[str] = set()
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        if not isinstance(tool, dict):
            raise invalid(f"{path}: Input should be a valid dictionary")
        kind = tool.get("type", "custom")
        types.add(kind)
        if kind in BETA_COMPUTER_TOOLS:
            _validate_beta_computer(tool, kind, path, betas)
        elif kind == TOOLSET:
            _validate_toolset(tool, path)
        elif kind == "custom":
            extra = set(tool) - _CUSTOM_TOOL_FIELDS
            if extra:
                raise invalid(f"{path}.{sorted(extra)[0]}: Extra inputs are not permitted")
            if not isinstance(tool.get("name"), str) or not re.fullmatch(
                r"[a-zA-Z0-9_-]{1,128}", tool["name"]
            ):
                raise invalid(
                    f"{path}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise invalid(
                    f"{path}.input_schema: Input should be a JSON schema with type 'object'"
                )
        elif not _OTHER_TOOL_TYPES.match(str(kind)):
            raise invalid(
                f"{path}.type: Input tag '{kind}' found using 'type' does not match any of the expected tags"
            )
        name = tool.get("name")
        if isinstance(name, str):
            if name in names:
                raise invalid("tools: Tool names must be unique.")
            names.add(name)
        breakpoints.add(tool.get("cache_control"), f"{path}.cache_control")
    beta_computers = sorted(types & BETA_COMPUTER_TOOLS.keys())
    if TOOLSET in types and beta_computers:
        raise invalid(
            f"tools: {TOOLSET} may not be combined with the beta computer tool {beta_computers[0]}"
        )
    if sum(tool.get("type") == TOOLSET for tool in tools) > 1:
        raise invalid(f"tools: {TOOLSET} may be declared only once")
    return frozenset(types)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _validate_beta_computer(tool: JSON, kind: str, path: str, betas: frozenset[str]) -> None:
    header = BETA_COMPUTER_TOOLS[kind]
    if header not in betas:
        raise invalid(f"{path}: tool type '{kind}' requires the 'anthropic-beta: {header}' header")
    allowed = _BETA_COMPUTER_FIELDS | ({"enable_zoom"} if kind == "computer_20251124" else set())
    extra = set(tool) - allowed
    if extra:
        raise invalid(f"{path}.{sorted(extra)[0]}: Extra inputs are not permitted")
    if tool.get("name") != "computer":
        raise invalid(f"{path}.name: Input should be 'computer'")
    for key in ("display_width_px", "display_height_px"):
        if key not in tool:
            raise invalid(f"{path}.{key}: Field required")
        if not _positive_int(tool[key]):
            raise invalid(f"{path}.{key}: Input should be a positive integer")
    number = tool.get("display_number")
    if number is not None and not (isinstance(number, int) and not isinstance(number, bool)):
        raise invalid(f"{path}.display_number: Input should be a valid integer")
    if "enable_zoom" in tool and not isinstance(tool["enable_zoom"], bool):
        raise invalid(f"{path}.enable_zoom: Input should be a valid boolean")


def _validate_toolset(tool: JSON, path: str) -> None:
    extra = set(tool) - {"type", "configs", "cache_control"}
    if extra:
        raise invalid(f"{path}.{sorted(extra)[0]}: Extra inputs are not permitted")
    configs = tool.get("configs")
    if configs is None:
        return
    if not isinstance(configs, dict):
        raise invalid(f"{path}.configs: Input should be a valid dictionary")
    for member, config in configs.items():
        if member not in TOOLSET_MEMBERS:
            raise invalid(f"{path}.configs.{member}: Extra inputs are not permitted")
        if config is None:
            continue
        if not isinstance(config, dict):
            raise invalid(f"{path}.configs.{member}: Input should be a valid dictionary")
        for key, value in config.items():
            if key not in ("enabled", "defer_loading"):
                raise invalid(f"{path}.configs.{member}.{key}: Extra inputs are not permitted")
            if value is not None and not isinstance(value, bool):
                raise invalid(f"{path}.configs.{member}.{key}: Input should be a valid boolean")


def _validate_thinking(body: JSON, max_tokens: int) -> bool:
    """Validate `thinking`; return whether the model will think."""
    thinking = body.get("thinking")
    if thinking is None:
        return False
    if not isinstance(thinking, dict):
        raise invalid("thinking: Input should be a valid dictionary")
    kind = thinking.get("type")
    allowed = {"enabled": {"type", "budget_tokens", "display"}, "adaptive": {"type", "display"}}
    if kind in ("disabled", "between_tools"):
        allowed[kind] = {"type"}
    if kind not in allowed:
        raise invalid(
            f"thinking.type: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            "'adaptive', 'between_tools', 'disabled', 'enabled'"
        )
    extra = set(thinking) - allowed[kind]
    if extra:
        raise invalid(f"thinking.{kind}.{sorted(extra)[0]}: Extra inputs are not permitted")
    if thinking.get("display") not in (None, "summarized", "omitted"):
        raise invalid(f"thinking.{kind}.display: Input should be 'summarized' or 'omitted'")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise invalid("thinking.enabled.budget_tokens: Field required")
        if budget < MIN_THINKING_BUDGET:
            raise invalid(
                f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_THINKING_BUDGET}"
            )
        if budget >= max_tokens:
            raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    on = kind in ("enabled", "adaptive")
    if on and body.get("temperature") not in (None, 1, 1.0):
        raise invalid("`temperature` may only be set to 1 when thinking is enabled")
    return on


def _validate_tool_choice(choice: Any, thinking_on: bool) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
        raise invalid("tool_choice.tool.name: Field required")
    if thinking_on and choice["type"] in ("any", "tool"):
        raise invalid("Thinking may not be enabled when tool_choice forces tool use.")
