"""Response-shaped payloads for the fake OpenAI Responses server.

Pure functions over JSON dicts, kept apart from the HTTP plumbing in
openai_server.py:

- builders tests use to script replies: `computer_call` (the preview tool's
  single `action` or the GA tool's batched `actions`), `reasoning`, `message`,
  and `response`, which wraps output items;
- `complete_response`, which turns a scripted dict into the full Response
  object the API sends (ids, status, echoed request settings, usage);
- token estimates for `usage`.

Field names follow the installed SDK's types (openai/types/responses/
response.py, response_computer_tool_call.py, response_reasoning_item.py,
response_output_message.py, response_usage.py).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tests.fakes.openai_errors import new_id

JSON = dict[str, Any]

DEFAULT_SAFETY_MESSAGE = {
    "malicious_instructions": "We've detected instructions that may cause your application to "
    "perform malicious or unauthorized actions. Please acknowledge this warning if you'd like "
    "to proceed.",
    "irrelevant_domain": "The current domain does not seem relevant to the task provided.",
    "sensitive_domain": "You are on a sensitive domain. Please confirm you wish to proceed.",
}
# Prompt caching applies from this many tokens on, in steps of CACHE_STEP (the API's rule).
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128
# Hidden reasoning a reasoning item stands for, beyond the summary the client sees.
HIDDEN_REASONING_TOKENS = 64


# --------------------------------------------------------------------- builders


def safety_check(code: str = "malicious_instructions", message: str | None = None) -> JSON:
    """A pending safety check as the API reports it (`cu_sc_...` id, code, message)."""
    return {
        "id": new_id("cu_sc"),
        "code": code,
        "message": message or DEFAULT_SAFETY_MESSAGE.get(code, code),
    }


def computer_call(
    action: Mapping[str, Any] | None = None,
    *,
    actions: Iterable[Mapping[str, Any]] | None = None,
    pending_safety_checks: Iterable[Mapping[str, Any]] | None = None,
    call_id: str | None = None,
) -> JSON:
    """A computer_call output item: `action` for computer_use_preview, `actions` for the GA
    `computer` tool. Ids are fresh (`cu_...` item id, `call_...` call_id), so a test can answer
    the call before the response is served. Checks missing an id, code or message get one."""
    if (action is None) == (actions is None):
        raise ValueError("computer_call takes exactly one of `action` (preview) or `actions` (GA)")
    checks = [{**safety_check(), **dict(check)} for check in pending_safety_checks or []]
    item: JSON = {
        "type": "computer_call",
        "id": new_id("cu"),
        "call_id": call_id or new_id("call"),
        "status": "completed",
        "pending_safety_checks": checks,
    }
    if action is not None:
        item["action"] = dict(action)
    else:
        item["actions"] = [dict(a) for a in actions or []]
    return item


def reasoning(summary_text: str | Iterable[str] | None = None) -> JSON:
    """A reasoning item. Its summary reaches the client only when the request asked for one
    (`reasoning.summary`), as with the API."""
    texts = [summary_text] if isinstance(summary_text, str) else list(summary_text or [])
    return {
        "type": "reasoning",
        "id": new_id("rs"),
        "summary": [{"type": "summary_text", "text": t} for t in texts],
    }


def message(text: str, *, phase: str | None = None) -> JSON:
    """An assistant output message with one output_text part."""
    item: JSON = {
        "type": "message",
        "id": new_id("msg"),
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    if phase is not None:
        item["phase"] = phase
    return item


def response(*output: Mapping[str, Any], **fields: Any) -> JSON:
    """A scripted Response: the output items in order, ids filled (`resp_...` and any item
    ids missing). `fields` override the rest (`status="incomplete"`, `incomplete_details=`...)."""
    items = [_with_ids(item) for item in output]
    return {"id": new_id("resp"), "object": "response", "output": items, **fields}


def _with_ids(item: Mapping[str, Any]) -> JSON:
    out = copy.deepcopy(dict(item))
    kind = out.get("type")
    prefix = {"computer_call": "cu", "reasoning": "rs", "message": "msg"}.get(str(kind), "item")
    out.setdefault("id", new_id(prefix))
    if kind == "computer_call":
        out.setdefault("call_id", new_id("call"))
        out.setdefault("status", "completed")
        out.setdefault("pending_safety_checks", [])
    elif kind == "message":
        out.setdefault("role", "assistant")
        out.setdefault("status", "completed")
        for part in out.get("content") or []:
            if part.get("type") == "output_text":
                part.setdefault("annotations", [])
    elif kind == "reasoning":
        out.setdefault("summary", [])
    return out


# ---------------------------------------------------------- response completion


def complete_response(
    scripted: Mapping[str, Any],
    body: Mapping[str, Any],
    *,
    input_tokens: int,
    cached_tokens: int,
    encrypted: Mapping[str, str],
) -> JSON:
    """The full Response for a request: the scripted output plus what the API echoes back.

    `encrypted` maps reasoning item ids to the `encrypted_content` to attach (only when the
    request asked for `reasoning.encrypted_content`).
    """
    out = copy.deepcopy(dict(scripted))
    wants_summary = (body.get("reasoning") or {}).get("summary") is not None
    output: list[JSON] = [_with_ids(item) for item in out.get("output") or []]
    for item in output:
        if item["type"] != "reasoning":
            continue
        if not wants_summary:
            item["summary"] = []  # the API sends summaries only when asked for them
        if item["id"] in encrypted:
            item["encrypted_content"] = encrypted[item["id"]]
    reasoning_tokens = sum(
        HIDDEN_REASONING_TOKENS + chars(item.get("summary")) // 4
        for item in output
        if item["type"] == "reasoning"
    )
    visible = [item for item in output if item["type"] != "reasoning"]
    output_tokens = max(1, chars(visible) // 4) + reasoning_tokens
    now = int(time.time())
    request_reasoning = body.get("reasoning") or {}
    status = out.get("status", "completed")
    defaults: JSON = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": now,
        "status": status,
        "background": bool(body.get("background") or False),
        "completed_at": now if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body.get("model"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {
            "effort": request_reasoning.get("effort"),
            "summary": request_reasoning.get("summary"),
        },
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": copy.deepcopy(body.get("tools") or []),
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    # `output_text` is not sent: the API leaves it to the SDKs, which derive it from `output`.
    return {**defaults, **out, "output": output}


# -------------------------------------------------------------------- token usage


def chars(value: Any) -> int:
    """Rough size of a JSON value in characters, leaving out image payloads (see image_tokens)."""
    if isinstance(value, dict):
        return sum(len(str(k)) + chars(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(chars(v) for v in value)
    if isinstance(value, str) and value.startswith("data:"):
        return 0
    return len(str(value))


def image_tokens(width: int, height: int) -> int:
    """The API's high-detail image cost: 85 plus 170 per 512-pixel tile."""
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def cached_prefix(tokens: int) -> int:
    """Tokens of an unchanged prefix the API would read from its cache."""
    return 0 if tokens < CACHE_MIN_TOKENS else tokens - tokens % CACHE_STEP
