"""Pure functions over an Anthropic Messages transcript (no I/O).

The transcript kept in the loop's state is a list of message params whose
content is always a list of blocks, with screenshots *by reference*
(`{"type": "image", "source": {"type": "screenshot_ref", "id": ...}}`) so the
checkpointed state stays small. Before each request a copy is prepared:
old images are dropped in chunks, cache breakpoints are added, and references
are resolved to base64 (anthropic.py does that last step, it needs I/O).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

Block = dict[str, Any]
Message = dict[str, Any]

NOT_EXECUTED = "Not executed: an earlier computer action in this turn failed."
INTERRUPTED = (
    "Interrupted: the service restarted while this action was running; it may or may "
    "not have taken effect. Here is a fresh screenshot."
)
IMAGE_PLACEHOLDER = "[older screenshot removed to save context]"
TURNS_OMITTED = "[{n} earlier turns (computer actions and their results) omitted to save context]"
CARRIED_INPUT = "Instructions given during the omitted turns, in order:"
CONTINUE_PROMPT = (
    "Your previous reply was cut off by the output token limit. Continue from where it stopped."
)
EPHEMERAL = {"type": "ephemeral"}


def image_ref(shot_id: str) -> Block:
    """An image block pointing at a stored screenshot (resolved before sending)."""
    return {"type": "image", "source": {"type": "screenshot_ref", "id": shot_id}}


def tool_result(
    tool_use: Block, *, text: str | None, is_error: bool, shot_id: str | None = None
) -> Block:
    """The tool_result answering `tool_use`: text first (if any), then the screenshot."""
    content: list[Block] = []
    if text:
        content.append({"type": "text", "text": text})
    if shot_id:
        content.append(image_ref(shot_id))
    if not content:
        # An empty content list is legal but tells the model nothing; say what happened.
        content.append({"type": "text", "text": "Error" if is_error else "Done"})
    block: Block = {
        "type": "tool_result",
        "tool_use_id": tool_use["id"],
        "is_error": is_error,
        "content": content,
    }
    if tool_use.get("toolset_name"):
        # GA toolset results must name the toolset of the tool_use they answer.
        block["toolset_name"] = tool_use["toolset_name"]
    return block


def unanswered_tool_uses(messages: list[Message]) -> list[Block]:
    """tool_use blocks of the last assistant message that no tool_result answers yet, in order."""
    last_assistant = next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant"), None
    )
    if last_assistant is None:
        return []
    answered: set[str] = set()
    for message in messages[last_assistant + 1 :]:
        answered.update(
            b["tool_use_id"] for b in message["content"] if b.get("type") == "tool_result"
        )
    return [
        b
        for b in messages[last_assistant]["content"]
        if b.get("type") == "tool_use" and b["id"] not in answered
    ]


def add_tool_result(messages: list[Message], block: Block) -> None:
    """Append `block` to the trailing user message (created if needed), after earlier
    tool_results and before any text: the API wants tool_results first."""
    if not messages or messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": []})
    content = messages[-1]["content"]
    at = next((i for i, b in enumerate(content) if b.get("type") != "tool_result"), len(content))
    content.insert(at, block)


def add_user_content(messages: list[Message], blocks: list[Block]) -> None:
    """Add user content so roles keep alternating: into the trailing user message
    (after its tool_result blocks) when there is one, else as a new user message."""
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": "user", "content": list(blocks)})


def add_assistant_content(messages: list[Message], blocks: list[Block]) -> None:
    """Append a response. After pause_turn the trailing message is already the
    assistant's and the new content continues it, so it is merged, not appended."""
    if messages and messages[-1]["role"] == "assistant":
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": "assistant", "content": list(blocks)})


def repair_messages(messages: list[Message], reason: str) -> list[Message]:
    """A copy of `messages` where every unanswered tool_use gets an is_error `reason`."""
    repaired = copy.deepcopy(messages)
    for tool_use in unanswered_tool_uses(repaired):
        add_tool_result(repaired, tool_result(tool_use, text=reason, is_error=True))
    return repaired


Slot = tuple[int, int, int | None]  # (message, block, block inside a tool_result or None)


def _image_positions(messages: list[Message]) -> Iterator[Slot]:
    """Where every image block is, oldest first, including inside tool_result content."""
    for m, message in enumerate(messages):
        if message["role"] != "user":
            continue
        for b, block in enumerate(message["content"]):
            if block.get("type") == "image":
                yield m, b, None
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                for i, item in enumerate(block["content"]):
                    if item.get("type") == "image":
                        yield m, b, i


def _block_at(messages: list[Message], slot: Slot) -> Block:
    m, b, i = slot
    block: Block = messages[m]["content"][b]
    return block if i is None else block["content"][i]


def _replaced(messages: list[Message], changes: dict[Slot, Block]) -> list[Message]:
    """A new list with the blocks at `changes` replaced, sharing everything else with
    `messages` (copy on write: a request is rebuilt every turn from a transcript that
    grows every turn, and a deep copy of it cost more than the rest of the step)."""
    if not changes:
        return messages
    out = list(messages)
    by_message: dict[int, list[tuple[int, int | None, Block]]] = {}
    for (m, b, i), block in changes.items():
        by_message.setdefault(m, []).append((b, i, block))
    for m, edits in by_message.items():
        content = list(messages[m]["content"])
        copied: set[int] = set()
        for b, i, block in edits:
            if i is None:
                content[b] = block
                continue
            if b not in copied:  # the tool_result and its content list, once
                content[b] = {**content[b], "content": list(content[b]["content"])}
                copied.add(b)
            content[b]["content"][i] = block
        out[m] = {**messages[m], "content": content}
    return out


def count_images(messages: list[Message]) -> int:
    return sum(1 for _ in _image_positions(messages))


def retain_images(messages: list[Message], keep: int, chunk: int) -> list[Message]:
    """The transcript keeping the `keep` most recent images, older ones replaced by a
    text placeholder (the input is not changed). Removal happens in multiples of
    `chunk` so that the request prefix (and with it the prompt cache) stays unchanged
    for `chunk` turns at a time: between `keep` and `keep + chunk - 1` images are sent."""
    slots = list(_image_positions(messages))
    to_remove = _cut(len(slots), keep, chunk)
    placeholder = {"type": "text", "text": IMAGE_PLACEHOLDER}
    return _replaced(messages, {slot: dict(placeholder) for slot in slots[:to_remove]})


def turns_to_drop(messages: list[Message], keep: int, chunk: int) -> int:
    """How many of the oldest turns may be left out to send the newest `keep`: a
    multiple of `chunk` (the prefix then holds for `chunk` turns, as with images).
    A turn is an assistant message and the user message after it."""
    assistants = sum(1 for m in messages[1:] if m["role"] == "assistant")
    excess = assistants - keep
    if keep <= 0 or excess < chunk:
        return 0
    complete = 0  # turns whose answer follows them (roles alternate from message 1)
    for i in range(1, len(messages) - 1, 2):
        if messages[i]["role"] != "assistant" or messages[i + 1]["role"] != "user":
            break
        complete += 1
    return min(excess - excess % max(chunk, 1), complete)


def _person_input(message: Message) -> list[Block]:
    """The text a person added to a user message (a follow-up run's input), as opposed
    to tool results, screenshots and the service's own continue prompt."""
    return [
        {"type": "text", "text": b["text"]}
        for b in message["content"]
        if b.get("type") == "text" and b.get("text") not in (CONTINUE_PROMPT, IMAGE_PLACEHOLDER)
    ]


def drop_turns(messages: list[Message], count: int) -> list[Message]:
    """The transcript without its `count` oldest turns (see turns_to_drop); the input
    is not changed. The first message (the task) says how many are missing and
    carries, in order, what a person said during them: instructions are never lost."""
    if count <= 0:
        return messages
    carried = [b for m in messages[2 : 1 + 2 * count : 2] for b in _person_input(m)]
    added: list[Block] = [{"type": "text", "text": TURNS_OMITTED.format(n=count)}]
    if carried:
        added += [{"type": "text", "text": CARRIED_INPUT}, *carried]
    first = messages[0]
    return [{**first, "content": [*first["content"], *added]}, *messages[1 + 2 * count :]]


def image_cut(messages: list[Message], keep: int, chunk: int) -> int:
    """How many of the oldest images retain_images replaces."""
    return _cut(count_images(messages), keep, chunk)


def _cut(images: int, keep: int, chunk: int) -> int:
    if keep <= 0:
        return 0
    excess = images - keep
    return excess - excess % max(chunk, 1) if excess > 0 else 0


def add_cache_breakpoints(messages: list[Message], user_turns: int) -> list[Message]:
    """The transcript with a cache_control breakpoint on the last block of the last
    `user_turns` user messages (the input is not changed). With the system prompt's,
    that makes `user_turns + 1` in all: the API accepts at most 4. The previous turn's
    breakpoint is where this turn's cache read hits, the newest is where the next
    turn's will."""
    changes: dict[Slot, Block] = {}
    for m in range(len(messages) - 1, -1, -1):
        if len(changes) >= user_turns:
            break
        message = messages[m]
        if message["role"] == "user" and message["content"]:
            b = len(message["content"]) - 1
            changes[(m, b, None)] = {**message["content"][b], "cache_control": dict(EPHEMERAL)}
    return _replaced(messages, changes)


def count_breakpoints(value: Any) -> int:
    """How many cache_control markers `value` (a request or part of one) carries."""
    if isinstance(value, dict):
        return int("cache_control" in value) + sum(count_breakpoints(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_breakpoints(v) for v in value)
    return 0


def resolve_images(messages: list[Message], source_of: Callable[[str], Block]) -> list[Message]:
    """The transcript with every screenshot_ref image carrying `source_of(id)`, a base64
    source (the input is not changed)."""
    changes: dict[Slot, Block] = {}
    for slot in _image_positions(messages):
        block = _block_at(messages, slot)
        if block["source"].get("type") == "screenshot_ref":
            changes[slot] = {**block, "source": source_of(block["source"]["id"])}
    return _replaced(messages, changes)


def screenshot_ids(messages: list[Message]) -> list[str]:
    """Referenced screenshot ids in the order they appear."""
    blocks = (_block_at(messages, slot) for slot in _image_positions(messages))
    return [b["source"]["id"] for b in blocks if b["source"].get("type") == "screenshot_ref"]


def final_text(blocks: list[Block]) -> str:
    """The text blocks of a response joined: the run's output."""
    return "\n\n".join(b["text"] for b in blocks if b.get("type") == "text" and b.get("text"))


def last_assistant_text(messages: list[Message]) -> str:
    """The text of the newest assistant message ("" if there is none)."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            return final_text(message["content"])
    return ""
