"""Structured output (SPEC v2.3): a run's answer as a JSON value valid against the
`output_schema` its creator gave. Provider-neutral and pure (no I/O).

How the model is asked is the same for every provider and tool version: the
schema goes into the system prompt (Anthropic) or the instructions (OpenAI),
and the model's final text is read as JSON (a fenced ```json block is accepted
too). Only what the provider notes (PROVIDERS.md) document is sent: OpenAI's
`text.format` and
Anthropic's `output_config.format` are not described there for computer-use
requests, their strict modes accept only a subset of JSON Schema (an ordinary user
schema could become a 400), and a final-answer tool's input must be an object,
while `output_schema` may describe any value. An answer that does not validate is
sent back once, as an ordinary user turn listing the validation errors; a second
invalid answer fails the run with error type `output_invalid`.

The loops keep `output_repairs` (how many repair turns this run has asked for) in
their checkpointed state, next to the repair prompt itself, so a run resumed
after a restart neither asks twice nor forgets that it asked.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator, SchemaError, validators

MAX_SCHEMA_BYTES = 64 * 1024
# Repair turns per run: one, then `output_invalid`.
MAX_REPAIRS = 1
# How much of the validation errors goes back to the model, and into the run's error.
MAX_ERRORS = 10
MAX_ERROR_CHARS = 300
OUTPUT_INVALID = "output_invalid"

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)\n?```", re.DOTALL)


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError (with a message for the client) unless `schema` is a JSON Schema
    of at most 64 KiB that this service can apply without fetching anything."""
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError("must be a JSON object") from exc
    if size > MAX_SCHEMA_BYTES:
        raise ValueError(f"must be at most {MAX_SCHEMA_BYTES} bytes serialized (it is {size})")
    if "$schema" in schema and not isinstance(schema["$schema"], str):
        raise ValueError("$schema must be a string (a meta-schema URI)")
    refs, scoped = _references(schema)
    for ref in refs:
        if not ref.startswith("#"):
            raise ValueError(
                f"$ref {ref!r} is not supported: only references within the schema (#...)"
            )
        # Without nested $id (which moves the base of a pointer) a "#/..." pointer is
        # checked here, so a typo is a 422 now rather than a failed run later.
        if not scoped and ref.startswith("#/") and not _resolves(schema, ref[1:]):
            raise ValueError(f"$ref {ref!r} points at nothing in the schema")
    try:
        _validator_class(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(
            f"is not a valid JSON Schema: {_clip(exc.message)}"
            + (f" (at /{where})" if where else "")
        ) from exc
    except RecursionError as exc:
        raise ValueError("is nested too deeply") from exc


def _validator_class(schema: dict[str, Any]) -> Any:
    return validators.validator_for(schema, default=Draft202012Validator)


def _references(schema: dict[str, Any]) -> tuple[list[str], bool]:
    """(every `$ref` / `$dynamicRef` string in the schema, whether a nested `$id` or `id`
    is there). A reference outside the schema is refused: the validator must never try
    to fetch one (it would fail, or reach the network)."""
    refs: list[str] = []
    scoped = False
    stack: list[tuple[Any, int]] = [(schema, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > 500:
            raise ValueError("is nested too deeply")
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("$ref", "$dynamicRef") and isinstance(item, str):
                    refs.append(item)
                elif key in ("$id", "id") and isinstance(item, str) and depth > 0:
                    scoped = True
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return refs, scoped


def _resolves(schema: Any, pointer: str) -> bool:
    """Whether the JSON pointer (RFC 6901, percent-encoded as in a URI fragment) names a
    value inside `schema`."""
    node = schema
    for raw in pointer.split("/")[1:]:
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def instructions(schema: dict[str, Any]) -> str:
    """What the system prompt (or the instructions) says about the answer's shape."""
    return (
        "<OUTPUT_FORMAT>\n"
        "This task must end with a structured answer. When it is done (or cannot be done), "
        "your final reply, without any tool call, must be a single JSON value and nothing "
        "else (no prose before or after it), valid against this JSON Schema:\n"
        f"{json.dumps(schema, ensure_ascii=False)}\n"
        "</OUTPUT_FORMAT>"
    )


def with_instructions(prompt: str, schema: dict[str, Any] | None) -> str:
    """`prompt` followed by the output instructions when the run has a schema."""
    return prompt if schema is None else f"{prompt}\n\n{instructions(schema)}"


def parse_answer(
    text: str, schema: dict[str, Any], *, last_part: str | None = None
) -> tuple[Any, list[str]]:
    """(the answer's JSON value, []) when `text` is JSON valid against `schema`, else
    (None, what is wrong: one line per problem, at most MAX_ERRORS). `last_part`, the
    reply's last text part, is tried too: a model may comment before its answer in a
    part of its own."""
    value, problem = _json_of(text, last_part)
    if problem is not None:
        return None, [problem]
    try:
        validator = _validator_class(schema)(schema)
        found = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except Exception as exc:  # a reference that cannot be resolved, a pathological pattern
        return None, [f"the schema could not be applied: {_clip(str(exc))}"]
    errors = [f"at {_pointer(e.absolute_path)}: {_clip(e.message)}" for e in found]
    if len(errors) > MAX_ERRORS:
        errors = [*errors[:MAX_ERRORS], f"... and {len(errors) - MAX_ERRORS} more"]
    return (None, errors) if errors else (value, [])


def _json_of(text: str, last_part: str | None) -> tuple[Any, str | None]:
    candidates = [text.strip()]
    if last_part is not None and last_part.strip() != candidates[0]:
        candidates.append(last_part.strip())
    fenced = _FENCE.findall(text)
    if fenced:
        candidates.append(fenced[-1].strip())
    error: json.JSONDecodeError | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate), None
        except json.JSONDecodeError as exc:
            error = error or exc
        except RecursionError:
            return None, "the answer is nested too deeply"
    if not text.strip():
        return None, "the answer is empty: a JSON value was expected"
    assert error is not None
    return None, f"the answer is not JSON: {error.msg} (line {error.lineno}, column {error.colno})"


def _pointer(path: Any) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else "the top level"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def repair_prompt(errors: list[str]) -> str:
    """The user turn that sends an invalid answer back to the model, once."""
    listed = "\n".join(f"- {error}" for error in errors)
    return (
        "Your final answer is not valid against the required JSON Schema:\n"
        f"{listed}\n"
        "Reply again with only the corrected JSON value (no prose, no tool call), valid "
        "against the schema."
    )


def failure_message(errors: list[str]) -> str:
    """The run's error message when the repaired answer is still invalid."""
    return "the answer is still not valid against output_schema after one repair: " + "; ".join(
        errors
    )
