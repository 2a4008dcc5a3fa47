"""What the fake OpenAI server remembers between requests, and the checks that need it.

The API keeps every stored response with its whole conversation (the context
it was chained on, its input items, its output), so a request is checked
against that state:

- `previous_response_id` must name a stored response (else 400
  previous_response_not_found);
- every computer_call in the conversation must be answered by a
  computer_call_output, and every output must answer a pending call (else
  400 "No tool output found..." / "No tool call found...");
- an output for a call that carried `pending_safety_checks` must acknowledge
  exactly those checks;
- a reasoning item must be followed by the item that followed it when it was
  issued, and an item may not appear twice in one conversation;
- items issued with `store: false` can only come back in full: a reasoning
  item needs the `encrypted_content` it was issued with.

Not thread-safe on its own: the server calls it under its lock.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.openai_errors import ApiError, invalid
from tests.fakes.openai_items import chars, image_tokens

JSON = dict[str, Any]


@dataclass
class _Issued:
    """An output item the server sent, and where it sat."""

    item: JSON
    follower_id: str | None  # the id of the item right after it in the same output
    stored: bool


@dataclass
class _Stored:
    response: JSON
    conversation: list[JSON]  # context + input + output, as the next chained request sees it
    tokens: int  # the conversation's size, for the next request's usage


@dataclass
class Prepared:
    """A request checked against the state: its full conversation and its prompt size."""

    conversation: list[JSON]
    input_tokens: int
    context_tokens: int  # of those, the part carried over by previous_response_id


def _not_found(message: str, param: str) -> ApiError:
    """The API's 404 for an input item it cannot find (unknown, or issued with store=false)."""
    return ApiError(404, message, param=param)


class ConversationStore:
    """Issued responses (by id, with their conversations) and issued output items."""

    def __init__(self) -> None:
        self._responses: dict[str, _Stored] = {}
        self._items: dict[str, _Issued] = {}
        self._response_ids: set[str] = set()  # every response sent, stored or not
        self._secret = secrets.token_bytes(16)

    # ------------------------------------------------------------------ queries

    def get(self, response_id: str) -> JSON | None:
        """A stored response by id (None if unknown or issued with store=false)."""
        stored = self._responses.get(response_id)
        return copy.deepcopy(stored.response) if stored else None

    def encrypted_content(self, item_id: str) -> str:
        """The opaque `encrypted_content` for a reasoning item: stable, so a resend can be
        checked, and unforgeable without the server's secret."""
        return "gAAAA" + hashlib.sha256(self._secret + item_id.encode()).hexdigest()

    # ---------------------------------------------------------------- checking

    def prepare(
        self, body: Mapping[str, Any], items: list[JSON], image_sizes: list[tuple[int, int]]
    ) -> Prepared:
        """Check `items` (the request's input) against the stored state; raise ApiError."""
        context: list[JSON] = []
        context_tokens = 0
        previous = body.get("previous_response_id")
        if previous is not None:
            stored = self._responses.get(previous)
            if stored is None:
                # A 400, not a 404: logs of real runs show `Error code: 400` with this code.
                raise invalid(
                    f"Previous response with id '{previous}' not found.",
                    "previous_response_id",
                    "previous_response_not_found",
                )
            context, context_tokens = stored.conversation, stored.tokens
        resolved = [self._resolve(item, i) for i, item in enumerate(items)]
        self._check_duplicates(context, resolved)
        self._check_reasoning(resolved)
        self._check_calls(context, resolved)
        new_tokens = chars(resolved) // 4 + sum(image_tokens(w, h) for w, h in image_sizes)
        return Prepared(
            conversation=[*context, *resolved],
            input_tokens=context_tokens + max(1, new_tokens),
            context_tokens=context_tokens,
        )

    def _resolve(self, item: JSON, index: int) -> JSON:
        """An item_reference becomes the item it names; issued items are checked for
        `store: false` rules."""
        if item["type"] == "item_reference":
            issued = self._items.get(item["id"])
            if issued is None or not issued.stored:
                raise _not_found(f"Item with id '{item['id']}' not found.", "input")
            return copy.deepcopy(issued.item)
        issued = self._items.get(item.get("id") or "")
        if item["type"] == "reasoning":
            if issued is None:
                raise _not_found(f"Item with id '{item['id']}' not found.", "input")
            sent = item.get("encrypted_content")
            if sent is not None and sent != self.encrypted_content(item["id"]):
                raise invalid(
                    f"The encrypted content for item {item['id']} could not be verified.",
                    f"input[{index}].encrypted_content",
                )
            if not issued.stored and sent is None:
                raise _not_found(
                    f"Item with id '{item['id']}' not found. Items are not persisted when "
                    "`store` is set to false. Try again with `store` set to true, or remove "
                    "this item from your input.",
                    "input",
                )
        return item

    @staticmethod
    def _check_duplicates(context: list[JSON], items: list[JSON]) -> None:
        seen = {c["id"] for c in context if isinstance(c.get("id"), str)}
        for item in items:
            item_id = item.get("id")
            if not isinstance(item_id, str):
                continue
            if item_id in seen:
                raise invalid(
                    f"Duplicate item found with id {item_id}. Remove duplicate items from your "
                    "input and try again.",
                    "input",
                )
            seen.add(item_id)

    def _check_reasoning(self, items: list[JSON]) -> None:
        for i, item in enumerate(items):
            if item["type"] != "reasoning":
                continue
            follower = self._items[item["id"]].follower_id
            if follower is None:
                continue
            following = items[i + 1] if i + 1 < len(items) else None
            if following is None or following.get("id") != follower:
                raise invalid(
                    f"Item '{item['id']}' of type 'reasoning' was provided without its "
                    "required following item.",
                    "input",
                )

    def _check_calls(self, context: list[JSON], items: list[JSON]) -> None:
        pending: dict[str, JSON] = {}  # call_id -> the computer_call awaiting its output
        for item in context:  # already valid: only collects the calls still unanswered
            if item["type"] == "computer_call":
                pending[item["call_id"]] = item
            elif item["type"] == "computer_call_output":
                pending.pop(item["call_id"], None)
        for i, item in enumerate(items):
            if item["type"] == "computer_call":
                issued = self._items.get(item["id"])
                # The checks the server issued are authoritative, whatever the resend says.
                pending[item["call_id"]] = issued.item if issued else item
            elif item["type"] == "computer_call_output":
                call = pending.pop(item["call_id"], None)
                if call is None:
                    raise invalid(
                        "No tool call found for function call output with call_id "
                        f"{item['call_id']}.",
                        "input",
                    )
                self._check_acknowledged(call, item, f"input[{i}].acknowledged_safety_checks")
        if pending:
            raise invalid(f"No tool output found for computer call {next(iter(pending))}.", "input")

    @staticmethod
    def _check_acknowledged(call: JSON, output: JSON, param: str) -> None:
        expected = [c["id"] for c in call.get("pending_safety_checks") or []]
        acked = {a["id"] for a in output.get("acknowledged_safety_checks") or []}
        missing = [c for c in expected if c not in acked]
        if missing:
            raise invalid(
                f"Computer call output for call_id {output['call_id']} has unacknowledged "
                f"safety checks: {', '.join(missing)}. Acknowledge every pending safety check "
                "in acknowledged_safety_checks.",
                param,
            )
        stray = sorted(acked - set(expected))
        if stray:
            raise invalid(
                f"Safety check '{stray[0]}' is not pending for computer call {output['call_id']}.",
                param,
            )

    # ---------------------------------------------------------------- recording

    def record(self, response: JSON, prepared: Prepared, *, stored: bool) -> None:
        """Remember an issued response and its output items."""
        output: list[JSON] = response["output"]
        self._response_ids.add(response["id"])
        for i, item in enumerate(output):
            follower = output[i + 1]["id"] if i + 1 < len(output) else None
            self._items[item["id"]] = _Issued(copy.deepcopy(item), follower, stored)
        if stored:
            usage = response.get("usage") or {}
            tokens = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
            conversation = [*prepared.conversation, *copy.deepcopy(output)]
            self._responses[response["id"]] = _Stored(copy.deepcopy(response), conversation, tokens)

    def already_issued(self, response: Mapping[str, Any]) -> str | None:
        """The first id in a scripted response the server has already sent, if any: the same
        built item served twice would make two conversations share one item."""
        if response.get("id") in self._response_ids:
            return str(response["id"])
        for item in response.get("output") or []:
            if item.get("id") in self._items:
                return str(item["id"])
        return None
