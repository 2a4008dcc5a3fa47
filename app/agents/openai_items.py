"""Pure functions over an OpenAI Responses conversation (no I/O).

The loop keeps the whole conversation as Responses *input items*, oldest
first: user messages, every output item exactly as the API sent it
(reasoning with its encrypted_content, assistant messages, computer_calls)
and the computer_call_outputs that answer the calls. Screenshots are kept by
reference (`"screenshot_ref": id` where the API wants `image_url`) so the
checkpointed state stays small; they are resolved just before a request.

Chaining: `marks` lists `{response_id, end}` for recent stored responses
whose server-side conversation is exactly `items[:end]`. A request chains on
the newest mark (`previous_response_id`) and sends only `items[end:]`; with
no mark it resends every item. Anything that rewrites the conversation before
a mark's `end` (dropping a call that must never be answered) drops that mark,
so the next request branches from the response before it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Item = dict[str, Any]
Mark = dict[str, Any]

# The mark of the newest response and the one before it are all a branch needs: only
# the newest response's items are ever dropped. One more keeps a margin.
MAX_MARKS = 3
IMAGE_PLACEHOLDER = "[older screenshot removed to save context]"


def is_input(item: Item) -> bool:
    """Whether `item` is ours (a user message or a call output) rather than the model's."""
    kind = item.get("type")
    return kind == "computer_call_output" or (kind == "message" and item.get("role") != "assistant")


def output_item(raw: Item) -> Item:
    """An output item as it is kept and resent: what the API sent, without null fields
    (a GA computer_call may carry `action: null` beside `actions`, and a call with
    both keys is rejected)."""
    return {key: value for key, value in raw.items() if value is not None}


def user_message(text: str | None, shot_id: str | None = None, detail: str = "auto") -> Item:
    """A user message: the text (if any), then a screenshot (if any)."""
    content: list[Item] = []
    if text:
        content.append({"type": "input_text", "text": text})
    if shot_id:
        content.append({"type": "input_image", "detail": detail, "screenshot_ref": shot_id})
    return {"type": "message", "role": "user", "content": content}


def call_output(call_id: str, shot_id: str, acknowledged: list[Item]) -> Item:
    """The computer_call_output answering `call_id` with a screenshot; the acknowledged
    provider safety checks go back exactly as the API listed them."""
    item: Item = {
        "type": "computer_call_output",
        "call_id": call_id,
        "output": {"type": "computer_screenshot", "screenshot_ref": shot_id},
    }
    if acknowledged:
        item["acknowledged_safety_checks"] = copy.deepcopy(acknowledged)
    return item


def unanswered_calls(items: list[Item]) -> list[Item]:
    """computer_calls that no computer_call_output answers yet, in order."""
    answered = {i["call_id"] for i in items if i.get("type") == "computer_call_output"}
    return [i for i in items if i.get("type") == "computer_call" and i["call_id"] not in answered]


def drop_calls(
    items: list[Item], marks: list[Mark], call_ids: Iterable[str]
) -> tuple[list[Item], list[Mark]]:
    """Copies of `items` without the calls `call_ids` (and the reasoning item right before
    each, which must not be sent without the item that followed it), and of `marks`
    without the responses whose conversation contained them."""
    doomed = set(call_ids)
    removed: set[int] = set()
    for index, item in enumerate(items):
        if item.get("type") == "computer_call" and item["call_id"] in doomed:
            removed.add(index)
            if index > 0 and items[index - 1].get("type") == "reasoning":
                removed.add(index - 1)
    if not removed:
        return copy.deepcopy(items), copy.deepcopy(marks)
    first = min(removed)
    kept = [copy.deepcopy(item) for i, item in enumerate(items) if i not in removed]
    return kept, [dict(mark) for mark in marks if mark["end"] <= first]


def add_mark(marks: list[Mark], response_id: str, end: int) -> list[Mark]:
    return [*marks, {"response_id": response_id, "end": end}][-MAX_MARKS:]


def final_text(items: list[Item]) -> str:
    """The text of the model's messages since our last input: the run's output."""
    start = len(items)
    while start > 0 and not is_input(items[start - 1]):
        start -= 1
    texts = [
        text
        for item in items[start:]
        if item.get("type") == "message"
        for text in message_texts(item)
    ]
    return "\n\n".join(texts)


def message_texts(item: Item) -> list[str]:
    """The output_text and refusal texts of an assistant message, in order."""
    texts: list[str] = []
    for part in item.get("content") or []:
        text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
        if isinstance(text, str) and text:
            texts.append(text)
    return texts


def has_refusal(items: Iterable[Item]) -> bool:
    return any(
        part.get("type") == "refusal"
        for item in items
        if item.get("type") == "message"
        for part in item.get("content") or []
    )


# ---- screenshots by reference ----------------------------------------------------------


def _image_slots(items: list[Item]) -> Iterator[Item]:
    """Every image holder (a call output's `output`, a user message's input_image),
    oldest first."""
    for item in items:
        if item.get("type") == "computer_call_output" and isinstance(item.get("output"), dict):
            yield item["output"]
        elif item.get("type") == "message" and isinstance(item.get("content"), list):
            yield from (p for p in item["content"] if p.get("type") == "input_image")


def screenshot_ids(items: list[Item]) -> list[str]:
    return [slot["screenshot_ref"] for slot in _image_slots(items) if "screenshot_ref" in slot]


def count_images(items: list[Item]) -> int:
    return sum(1 for _ in _image_slots(items))


def retain_images(items: list[Item], keep: int, placeholder_url: str) -> list[Item]:
    """A copy keeping the `keep` newest screenshots (all when keep <= 0). An older call
    output must still carry an image: it gets `placeholder_url`; an older input_image
    becomes a short text. Only used when the whole conversation is resent."""
    trimmed = copy.deepcopy(items)
    slots = list(_image_slots(trimmed))
    if keep <= 0 or len(slots) <= keep:
        return trimmed
    for slot in slots[: len(slots) - keep]:
        if slot.get("type") == "input_image":
            slot.clear()
            slot.update(type="input_text", text=IMAGE_PLACEHOLDER)
        else:
            slot.pop("screenshot_ref", None)
            slot["image_url"] = placeholder_url
    return trimmed


def resolve_images(items: list[Item], url_of: Callable[[str], str]) -> list[Item]:
    """A copy where every screenshot_ref is replaced by `image_url: url_of(id)`."""
    resolved = copy.deepcopy(items)
    for slot in _image_slots(resolved):
        if "screenshot_ref" in slot:
            slot["image_url"] = url_of(slot.pop("screenshot_ref"))
    return resolved


# ---- notes to the model ------------------------------------------------------------------
# A computer_call_output carries a screenshot and nothing else, so what the model must
# know about a call (an error, actions that did not run) follows it as a user message.


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _kinds(raws: list[Item]) -> str:
    return ", ".join(str(r.get("type") or "unknown") for r in raws)


def _which(raws: list[Item], index: int) -> str:
    if len(raws) == 1:
        return f"Your {_kinds(raws)} action"
    return f"Action {index + 1} of {len(raws)} ({_kinds(raws[index : index + 1])})"


def not_run(raws: list[Item], start: int) -> str:
    """The sentence saying that raws[start:] did not run ("" when nothing is left)."""
    rest = raws[start:]
    if not rest:
        return ""
    if len(rest) == 1:
        return f"Action {start + 1} ({_kinds(rest)}) was not executed."
    return f"Actions {start + 1}-{len(raws)} ({_kinds(rest)}) were not executed."


def join_sentences(*parts: str) -> str:
    """The non-empty parts, space-separated."""
    return " ".join(p for p in parts if p)


def failure_note(raws: list[Item], index: int, error: str) -> str:
    return join_sentences(
        f"{_which(raws, index)} failed: {_sentence(error)}",
        not_run(raws, index + 1),
        "The screenshot shows the screen after the failure.",
    )


def interrupted_note(raws: list[Item], index: int, why: str) -> str:
    """For an action that was running when the run stopped: it may or may not have run."""
    return join_sentences(
        _sentence(why),
        f"{_which(raws, index)} may or may not have taken effect.",
        not_run(raws, index + 1),
    )


def partial_note(raws: list[Item], done: int, why: str) -> str:
    """For a batch stopped between two actions."""
    ran = "Action 1" if done == 1 else f"Actions 1-{done}"
    return join_sentences(_sentence(why), f"{ran} of {len(raws)} ran.", not_run(raws, done))


def dropped_note(raws: list[Item], why: str) -> str:
    """For a call that is never answered: the model no longer sees it, so say what it was."""
    plural = "s" if len(raws) != 1 else ""
    return join_sentences(
        _sentence(why), f"Your last computer call ({_kinds(raws)} action{plural}) was not executed."
    )
