"""AnthropicLoop conversations through the real SDK against the strict fake server."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import pytest

from app.agents import anthropic_transcript as tx
from app.agents.anthropic import AnthropicLoop
from app.agents.anthropic_tools import TOOLSET
from app.agents.base import RunOutcome
from app.computers.base import Click, CursorPosition, Display, Key, Scroll, Type, Zoom
from app.computers.fake import FakeComputer
from app.computers.scaling import png_size
from tests.agents.conftest import MemoryContext, bodies, make_config
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
    toolset_call,
)

BIG = Display(1920, 1200)  # advertised to beta tools as WXGA 1280x800: coordinates x1.5


def image_size(block: dict[str, Any]) -> tuple[int, int]:
    return png_size(base64.b64decode(block["source"]["data"]))


def results_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in body["messages"][-1]["content"] if b["type"] == "tool_result"]


async def test_click_and_type_run_at_screen_coordinates(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    click = computer_call("left_click", coordinate=[640, 400])
    typing = computer_call("type", text="hello")
    fake.enqueue(
        tool_use_message(click, text="Clicking the field"),
        tool_use_message(typing),
        text_message("All done"),
    )
    computer = FakeComputer(BIG, start_url="https://example.com/")
    ctx = MemoryContext(make_config(display=BIG), computer)

    outcome = await AnthropicLoop(client).run(ctx, {}, "Fill in the form", resumed=False)

    assert outcome == RunOutcome("end_turn", output="All done")
    assert computer.actions == [Click(x=960, y=600), Type(text="hello")]
    requests = fake.requests
    assert len(requests) == 3
    assert all(r.betas == {"computer-use-2025-11-24"} for r in requests)
    first = requests[0].body
    assert first["tools"] == [
        {
            "type": "computer_20251124",
            "name": "computer",
            "display_width_px": 1280,
            "display_height_px": 800,
            "enable_zoom": True,
        }
    ]
    assert "headless Chromium" in first["system"][0]["text"]
    task = first["messages"][0]["content"]
    assert task[0] == {"type": "text", "text": "Fill in the form"}
    assert image_size(task[1]) == (1280, 800)  # the screenshot is scaled to what is advertised
    (result,) = results_of(requests[1].body)
    assert result["tool_use_id"] == click["id"] and result["is_error"] is False
    assert image_size(result["content"][-1]) == (1280, 800)

    assert ctx.types() == [
        "turn.started",
        "assistant.message",
        "turn.completed",
        "tool.call",
        "tool.result",
        "turn.started",
        "turn.completed",
        "tool.call",
        "tool.result",
        "turn.started",
        "assistant.message",
        "turn.completed",
    ]
    call = ctx.of_type("tool.call")[0]
    assert call == {
        "call_id": click["id"],
        "tool": "computer",
        "action": {
            "type": "click",
            "x": 960,
            "y": 600,
            "button": "left",
            "count": 1,
            "modifiers": [],
        },
        "input": {"action": "left_click", "coordinate": [640, 400]},
    }
    shot = ctx.of_type("tool.result")[0]["screenshot"]
    assert shot["width"] == 1280 and shot["page_url"] == "https://example.com/"
    assert shot["url"] == f"/v1/sessions/ses_test/screenshots/{shot['id']}"
    completed = ctx.of_type("turn.completed")[0]
    assert completed["stop_reason"] == "tool_use" and completed["turn"] == 0
    assert set(completed["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    }
    # Three turns recorded, the first with its action and result.
    assert sorted(ctx.turns) == [0, 1, 2]
    assert ctx.turns[0].actions[0]["call_id"] == click["id"]
    assert ctx.turns[0].results[0]["is_error"] is False
    assert ctx.turns[0].response and ctx.turns[0].response["stop_reason"] == "tool_use"
    assert "data" not in json.dumps(ctx.turns[0].request)  # no image bytes in the summary
    # The checkpointed state holds screenshots by reference only.
    assert "base64" not in json.dumps(ctx.states)
    assert ctx.state["next_turn"] == 3 and ctx.state["in_flight"] is None


async def test_first_failure_skips_the_rest_of_the_turn(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    calls = [
        computer_call("left_click", coordinate=[10, 10]),
        computer_call("type", text="x"),
        computer_call("key", text="Return"),
    ]
    fake.enqueue(tool_use_message(*calls), text_message("Stopped"))
    computer = FakeComputer(fail_on={"type"})
    ctx = MemoryContext(make_config(), computer)

    assert (await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)).output == "Stopped"

    assert computer.actions == [Click(x=10, y=10), Type(text="x")]  # the key never ran
    ok, failed, skipped = results_of(fake.requests[1].body)
    assert ok["is_error"] is False
    assert failed["is_error"] is True
    assert failed["content"][0] == {"type": "text", "text": "Injected failure for type"}
    assert failed["content"][1]["type"] == "image"  # the model sees the screen after a failure
    assert skipped == {
        "type": "tool_result",
        "tool_use_id": calls[2]["id"],
        "is_error": True,
        "content": [{"type": "text", "text": tx.NOT_EXECUTED}],
        "cache_control": {"type": "ephemeral"},
    }
    results = ctx.of_type("tool.result")
    assert [r["not_executed"] for r in results] == [False, False, True]
    assert results[1]["error"] == "Injected failure for type"
    assert len(ctx.of_type("tool.call")) == 3


async def test_bad_input_is_answered_not_raised(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    calls = [computer_call("left_click", coordinate=[5000, 5]), computer_call("type", text="x")]
    fake.enqueue(tool_use_message(*calls), text_message("ok"))
    computer = FakeComputer()
    ctx = MemoryContext(make_config(), computer)

    await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    assert computer.actions == []
    bad, skipped = results_of(fake.requests[1].body)
    assert bad["is_error"] and "outside the 1280x800 screen" in bad["content"][0]["text"]
    assert skipped["content"][0]["text"] == tx.NOT_EXECUTED
    assert ctx.of_type("tool.call")[0]["action"] is None


async def test_ga_toolset_conversation(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    click = toolset_call("left_click", coordinate=[100, 100], text="shift")
    scroll = toolset_call("scroll", scroll_direction="down", scroll_amount=3)
    where = toolset_call("cursor_position")
    fake.enqueue(tool_use_message(click, scroll), tool_use_message(where), text_message("Done"))
    computer = FakeComputer()
    config = make_config(
        model="claude-sonnet-5-5", computer_type="cdp", system_prompt="Never buy anything."
    )
    ctx = MemoryContext(config, computer)

    await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    assert computer.actions == [
        Click(x=100, y=100, modifiers=["Shift"]),
        Scroll(dy=3),
        CursorPosition(),
    ]
    system = fake.requests[0].body["system"][0]["text"]
    assert "address bar" in system and system.endswith("\n\nNever buy anything.")
    for request in fake.requests:
        assert request.path == "/v1/messages"  # the GA namespace, no beta header
        assert not request.betas
        assert request.body["tools"] == [{"type": TOOLSET}]
    first, second = results_of(fake.requests[1].body)
    assert first["toolset_name"] == second["toolset_name"] == "computer"
    (position,) = results_of(fake.requests[2].body)
    assert position["content"][0] == {"type": "text", "text": "X=100, Y=100"}
    assert ctx.of_type("tool.call")[0]["tool"] == "left_click"
    assert ctx.of_type("tool.result")[2]["output"] == "X=100, Y=100"


async def test_cursor_position_and_zoom_in_model_space(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[640, 400])),
        tool_use_message(computer_call("cursor_position")),
        tool_use_message(computer_call("zoom", region=[0, 0, 320, 200])),
        text_message("Seen"),
    )
    computer = FakeComputer(BIG)
    ctx = MemoryContext(make_config(display=BIG), computer)

    await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    assert computer.actions[1:] == [CursorPosition(), Zoom(region=(0, 0, 480, 300))]
    (position,) = results_of(fake.requests[2].body)
    assert position["content"][0]["text"] == "X=640, Y=400"  # the screen's 960,600 scaled back
    (zoomed,) = results_of(fake.requests[3].body)
    assert image_size(zoomed["content"][-1]) == (1280, 800)  # the crop fills the image budget


@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("claude-haiku-4-5", {"type": "enabled", "budget_tokens": 2048}),
        ("claude-sonnet-4-6", {"type": "adaptive", "display": "summarized"}),
    ],
)
async def test_thinking_blocks_go_back_unchanged(
    fake: FakeAnthropic,
    client: anthropic.AsyncAnthropic,
    model: str,
    thinking: dict[str, Any],
) -> None:
    from tests.fakes.anthropic_server import redacted_thinking_block

    fake.enqueue(
        tool_use_message(
            computer_call("screenshot"), thinking=["Let me look", redacted_thinking_block()]
        ),
        tool_use_message(computer_call("key", text="ctrl+l"), thinking="Now the address bar"),
        text_message("done", thinking="finished"),
    )
    computer = FakeComputer()
    ctx = MemoryContext(make_config(model=model, thinking_budget=2048), computer)

    outcome = await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    # The strict fake rejects a thinking block whose text or signature changed.
    assert outcome.output == "done"
    assert fake.requests[0].body["thinking"] == thinking
    assert computer.actions[-1] == Key(keys=["Control", "l"])
    sent = fake.requests[2].body["messages"]
    assert [b["type"] for b in sent[1]["content"]] == ["thinking", "redacted_thinking", "tool_use"]
    assert [e["text"] for e in ctx.of_type("assistant.thinking")] == [
        "Let me look",
        None,
        "Now the address bar",
        "finished",
    ]


def clicks(n: int) -> list[dict[str, Any]]:
    """`n` single-click replies, each with a tool_use of its own."""
    return [
        tool_use_message(computer_call("left_click", coordinate=[10 + k, 10])) for k in range(n)
    ]


async def test_long_conversation_keeps_four_breakpoints_and_few_images(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    turns = 12
    fake.enqueue(*clicks(turns), text_message("Finished"))
    ctx = MemoryContext(make_config(image_retention=3), FakeComputer())

    await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    requests = bodies(fake)
    assert len(requests) == turns + 1
    images = [tx.count_images(body["messages"]) for body in requests]
    assert images == [1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4]  # dropped 3 at a time
    assert all(tx.count_breakpoints(body) <= 4 for body in requests)
    assert tx.count_breakpoints(requests[-1]) == 4
    # The turn record's summary counts what was sent.
    summaries = [ctx.turns[n].request for n in range(turns + 1)]
    assert [t["cache_breakpoints"] for t in summaries] == [
        tx.count_breakpoints(body) for body in requests
    ]
    assert [t["images"] for t in summaries] == images
    # Between removals the prefix is stable, so the fake's prompt cache is read.
    reads = [ctx.turns[n].usage["cache_read_input_tokens"] for n in range(turns + 1)]
    assert reads[0] == 0 and all(r > 0 for r in reads[1:])
    assert ctx.loads == 0  # every screenshot sent came from the loop's own cache
    # Each reply and each action's result rides with the write that follows it
    # (MemoryContext checks that no action or request came before that write).
    assert ctx.deferred_count == 2 * turns + 1


async def test_turn_retention_bounds_what_long_sessions_send(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    # Through the real SDK to the strict fake: every trimmed request is a valid one
    # (roles alternate, each tool_result answers a tool_use of the message before it).
    turns = 14
    fake.enqueue(*clicks(turns), text_message("Finished"))
    ctx = MemoryContext(make_config(image_retention=3, turn_retention=4), FakeComputer())

    outcome = await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    assert outcome.stop_reason == "end_turn" and fake.script_errors == []
    requests = bodies(fake)
    sent_turns = [sum(1 for m in body["messages"] if m["role"] == "assistant") for body in requests]
    images = [tx.count_images(body["messages"]) for body in requests]
    assert sent_turns == [0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7, 5, 6, 7, 5]
    assert images == [1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3]
    # Old turns leave only with old images: the prefix changes once per chunk, not twice.
    cuts = [n for n in range(1, len(requests)) if sent_turns[n] < sent_turns[n - 1]]
    assert cuts == [8, 11, 14] and all(images[n] < images[n - 1] for n in cuts)
    sizes = [len(json.dumps(body)) for body in requests]
    # Bounded: no later request is larger than the 7-turn one plus the note (~90 bytes),
    # and the same point of the cycle has the same size (the one before: no growth).
    assert max(sizes[8:]) <= sizes[7] + 200
    assert sizes[9:12] == sizes[12:15]
    last = requests[-1]["messages"]
    assert last[0]["content"][0] == {"type": "text", "text": "go"}
    assert last[0]["content"][-1]["text"] == tx.TURNS_OMITTED.format(n=9)
    assert ctx.turns[14].request["turns_omitted"] == 9
    assert tx.count_breakpoints(requests[-1]) == 4


async def test_turn_retention_across_runs_keeps_the_follow_up_input(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    loop = AnthropicLoop(client)
    computer = FakeComputer()
    fake.enqueue(*clicks(6), text_message("first done"))
    first = MemoryContext(make_config(image_retention=2, turn_retention=2), computer)
    await loop.run(first, {}, "open the shop", resumed=False)
    fake.enqueue(*clicks(6), text_message("hats found"))
    config = make_config(run_id="run_2", image_retention=2, turn_retention=2)
    second = MemoryContext(config, computer, shots=first.shots)
    outcome = await loop.run(second, first.state, "now search for hats", resumed=False)

    assert outcome.output == "hats found" and fake.script_errors == []
    last = fake.requests[-1].body["messages"]
    assert sum(1 for m in last if m["role"] == "assistant") <= 2 + 2  # keep + chunk
    texts = [b.get("text") for b in last[0]["content"] if b.get("type") == "text"]
    assert texts[0] == "open the shop" and texts[-2:] == [tx.CARRIED_INPUT, "now search for hats"]
    # The follow-up appears once: carried with the task, or still in its own turn.
    everywhere = [b.get("text") for m in last for b in m["content"] if b.get("type") == "text"]
    assert everywhere.count("now search for hats") == 1
