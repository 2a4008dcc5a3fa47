"""Pure tests of the transcript functions: image retention, cache breakpoints,
repair, follow-up input placement."""

from __future__ import annotations

import copy
from typing import Any

import anthropic

from app.agents import anthropic_transcript as tx
from app.agents.anthropic import AnthropicLoop, new_state

Message = dict[str, Any]
# repair() is pure: no request is ever made with this client.
LOOP = AnthropicLoop(anthropic.AsyncAnthropic(api_key="unused"))


def assistant(*ids: str, toolset: bool = False) -> Message:
    blocks: list[dict[str, Any]] = [{"type": "thinking", "thinking": "hm", "signature": "sig"}]
    for call_id in ids:
        block: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": "computer", "input": {}}
        if toolset:
            block.update(name="left_click", toolset_name="computer")
        blocks.append(block)
    return {"role": "assistant", "content": blocks}


def answered(*ids: str, shot: int = 0) -> Message:
    return {
        "role": "user",
        "content": [
            tx.tool_result({"id": i}, text=None, is_error=False, shot_id=f"s{shot + n}")
            for n, i in enumerate(ids)
        ],
    }


def conversation(turns: int) -> list[Message]:
    """A task with its screenshot, then `turns` single-action turns, each answered."""
    messages: list[Message] = [
        {"role": "user", "content": [{"type": "text", "text": "task"}, tx.image_ref("s0")]}
    ]
    for n in range(1, turns + 1):
        messages += [assistant(f"t{n}"), answered(f"t{n}", shot=n)]
    return messages


def test_retention_keeps_the_newest_and_removes_in_chunks() -> None:
    sent_counts = []
    for turns in range(0, 12):
        messages = conversation(turns)
        trimmed = tx.retain_images(messages, keep=3, chunk=3)
        sent_counts.append(tx.count_images(trimmed))
        # The newest images are the ones kept.
        kept = tx.screenshot_ids(trimmed)
        assert kept == tx.screenshot_ids(messages)[-len(kept) :]
        assert tx.count_images(messages) == turns + 1  # the stored transcript is untouched
    assert sent_counts == [1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3]


def test_retention_leaves_the_prefix_unchanged_between_removals() -> None:
    # Turns 5, 6 and 7 send the same first messages: the prompt cache keeps hitting.
    prefixes = [tx.retain_images(conversation(n), 3, 3)[:10] for n in (5, 6, 7)]
    assert prefixes[0] == prefixes[1] == prefixes[2]
    placeholder = prefixes[0][0]["content"][1]
    assert placeholder == {"type": "text", "text": tx.IMAGE_PLACEHOLDER}


def test_retention_with_chunk_one_is_a_sliding_window() -> None:
    trimmed = tx.retain_images(conversation(9), keep=3, chunk=1)
    assert tx.screenshot_ids(trimmed) == ["s7", "s8", "s9"]


def test_breakpoints_never_exceed_four_with_the_system_prompt() -> None:
    system = [{"type": "text", "text": "sys", "cache_control": dict(tx.EPHEMERAL)}]
    for turns in (0, 1, 2, 12):
        marked = tx.add_cache_breakpoints(conversation(turns), 3)
        assert tx.count_breakpoints([system, *marked]) == 1 + min(3, turns + 1)
        # On the last block of the user turns, newest first.
        users = [m for m in marked if m["role"] == "user"]
        assert all("cache_control" in m["content"][-1] for m in users[-3:])
    assert tx.count_breakpoints(conversation(12)) == 0  # the stored transcript has none


def test_repair_answers_every_unanswered_tool_use() -> None:
    state = {**new_state(), "messages": [*conversation(1), assistant("a", "b", toolset=True)]}
    state["in_flight"] = {"call_id": "a", "turn": 1, "action": None}
    before = repr(state)
    repaired = LOOP.repair(state, "Interrupted")
    assert repr(state) == before  # pure
    assert repaired["in_flight"] is None
    last = repaired["messages"][-1]
    assert [b["tool_use_id"] for b in last["content"]] == ["a", "b"]
    for block in last["content"]:
        assert block["is_error"] is True
        assert block["content"] == [{"type": "text", "text": "Interrupted"}]
        assert block["toolset_name"] == "computer"
    assert tx.unanswered_tool_uses(repaired["messages"]) == []
    again = LOOP.repair(repaired, "Interrupted")
    assert again["messages"] == repaired["messages"]  # idempotent


def test_repair_keeps_results_already_given_and_puts_them_first() -> None:
    messages = [*conversation(0), assistant("a", "b"), answered("a")]
    messages[-1]["content"].append({"type": "text", "text": "note"})
    repaired = tx.repair_messages(messages, "Interrupted")
    kinds = [(b["type"], b.get("tool_use_id")) for b in repaired[-1]["content"]]
    assert kinds == [("tool_result", "a"), ("tool_result", "b"), ("text", None)]


def test_repair_of_an_empty_state() -> None:
    repaired = LOOP.repair({}, "Interrupted")
    assert repaired["messages"] == []


def test_follow_up_input_goes_after_the_tool_results() -> None:
    messages = [*conversation(0), assistant("a"), answered("a")]
    tx.add_user_content(messages, [{"type": "text", "text": "next task"}])
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["type"] for b in messages[-1]["content"]] == ["tool_result", "text"]


def test_follow_up_input_after_a_final_answer_is_a_new_user_message() -> None:
    messages = [
        *conversation(0),
        {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
    ]
    tx.add_user_content(messages, [{"type": "text", "text": "next task"}])
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[-1]["content"] == [{"type": "text", "text": "next task"}]


def test_pause_turn_continuation_merges_into_the_assistant_message() -> None:
    messages = [*conversation(0)]
    tx.add_assistant_content(messages, [{"type": "text", "text": "part 1"}])
    tx.add_assistant_content(messages, [{"type": "text", "text": "part 2"}])
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert tx.final_text(messages[-1]["content"]) == "part 1\n\npart 2"


def test_resolve_images_replaces_references_only_in_the_copy() -> None:
    messages = conversation(1)
    resolved = tx.resolve_images(
        messages, lambda sid: {"type": "base64", "media_type": "image/png", "data": sid}
    )
    assert resolved[0]["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "s0",
    }
    assert resolved[2]["content"][0]["content"][0]["source"]["data"] == "s1"
    assert messages[0]["content"][1]["source"]["type"] == "screenshot_ref"


def test_request_preparation_never_changes_the_transcript_and_shares_the_rest() -> None:
    # retain, breakpoints and resolve copy only what they change: the state the
    # loop checkpoints must come out identical, and untouched turns are shared.
    messages = conversation(12)
    before = copy.deepcopy(messages)
    sent = tx.retain_images(messages, keep=3, chunk=3)
    sent = tx.add_cache_breakpoints(sent, 3)
    sent = tx.resolve_images(
        sent, lambda sid: {"type": "base64", "media_type": "image/png", "data": sid}
    )
    assert messages == before
    assert tx.count_images(sent) == 4 and tx.screenshot_ids(sent) == []
    assert tx.count_breakpoints(sent) == 3
    # Assistant turns are unchanged: the same objects, not copies.
    assert all(sent[i] is messages[i] for i in range(1, len(messages), 2))
    # Every user turn changed (image dropped, or resolved): each is a new object.
    assert all(sent[i] is not messages[i] for i in range(0, len(messages), 2))
    assert sent[-1]["content"][0]["content"][0]["source"]["data"] == "s12"
    assert sent[-1]["content"][0]["cache_control"] == tx.EPHEMERAL


def test_turn_retention_drops_old_turns_in_chunks_and_says_so() -> None:
    sent_turns = []
    for turns in range(0, 12):
        messages = conversation(turns)
        before = copy.deepcopy(messages)
        omitted = tx.turns_to_drop(messages, keep=4, chunk=3)
        kept = tx.drop_turns(messages, omitted)
        assert messages == before  # the stored transcript is untouched
        assert kept[0]["role"] == "user" and kept[0]["content"][:2] == messages[0]["content"]
        if omitted:
            note = tx.TURNS_OMITTED.format(n=omitted)
            assert kept[0]["content"][-1] == {"type": "text", "text": note}
        # Roles still alternate, the newest turns are the ones kept, whole.
        assert all(kept[i]["role"] != kept[i + 1]["role"] for i in range(len(kept) - 1))
        assert kept[1:] == messages[1 + 2 * omitted :]
        sent_turns.append(turns - omitted)
    # Between keep and keep + chunk - 1 turns: 4, 5, 6, then 4 again.
    assert sent_turns == [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 4, 5]


def test_turn_retention_carries_a_persons_input_from_the_turns_it_drops() -> None:
    messages = conversation(8)
    messages[6]["content"].append({"type": "text", "text": "now search for hats"})  # a follow-up
    messages[8]["content"].append({"type": "text", "text": tx.CONTINUE_PROMPT})  # the service's
    omitted = tx.turns_to_drop(messages, keep=2, chunk=1)
    kept = tx.drop_turns(messages, omitted)
    assert omitted == 6 and kept[1:] == messages[13:]
    assert kept[0]["content"][-3:] == [
        {"type": "text", "text": tx.TURNS_OMITTED.format(n=6)},
        {"type": "text", "text": tx.CARRIED_INPUT},
        {"type": "text", "text": "now search for hats"},
    ]
    assert all(kept[i]["role"] != kept[i + 1]["role"] for i in range(len(kept) - 1))
