"""OpenAILoop conversations through the real SDK against the strict fake Responses API:
both tools, GA batches, chaining across turns and runs, the 404 fallback."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from app.agents.base import RunOutcome
from app.agents.openai import OpenAILoop
from app.computers.base import Click, Display, Drag, Key, Scroll, Type
from app.computers.fake import FakeComputer
from tests.agents.conftest import (
    MemoryContext,
    data_url_size,
    openai_bodies,
    openai_config,
)
from tests.fakes.openai_server import FakeOpenAI, computer_call, message, reasoning, response

BIG = Display(2560, 1536)  # computer_use_preview is shown 1280x768: coordinates x2
CLICK = {"type": "click", "x": 100, "y": 200, "button": "left"}
TYPE = {"type": "type", "text": "hello"}
KEYS = {"type": "keypress", "keys": ["CTRL", "L"]}


def output_of(body: dict[str, Any]) -> dict[str, Any]:
    (item,) = [i for i in body["input"] if i["type"] == "computer_call_output"]
    return item


def notes_of(body: dict[str, Any]) -> list[str]:
    return [
        part["text"]
        for item in body["input"]
        if item["type"] == "message" and item["role"] == "user"
        for part in item["content"]
        if part["type"] == "input_text"
    ]


async def test_preview_conversation_runs_every_action_at_screen_coordinates(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    calls = [
        computer_call({"type": "click", "x": 640, "y": 384, "button": "left"}),
        computer_call(TYPE),
        computer_call(KEYS),
        computer_call({"type": "scroll", "x": 100, "y": 200, "scroll_x": 0, "scroll_y": 300}),
        computer_call({"type": "drag", "path": [{"x": 10, "y": 10}, {"x": 100, "y": 50}]}),
    ]
    openai_fake.enqueue(
        response(reasoning("The field is in the middle"), calls[0]),
        *(response(call) for call in calls[1:]),
        response(message("All done")),
    )
    computer = FakeComputer(BIG, start_url="https://example.com/")
    config = openai_config(model="computer-use-preview", display=BIG)
    ctx = MemoryContext(config, computer)

    outcome = await OpenAILoop(openai_client).run(ctx, {}, "Fill in the form", resumed=False)

    assert outcome == RunOutcome("end_turn", output="All done")
    assert computer.actions == [
        Click(x=1280, y=768),
        Type(text="hello"),
        Key(keys=["Control", "l"]),
        Scroll(x=200, y=400, dx=0, dy=6.0),  # 300 model px = 600 screen px = 6 notches
        Drag(path=[(20, 20), (200, 100)]),
    ]
    bodies = openai_bodies(openai_fake)
    assert len(bodies) == 6
    first = bodies[0]
    assert first["tools"] == [
        {
            "type": "computer_use_preview",
            "display_width": 1280,
            "display_height": 768,
            "environment": "browser",
        }
    ]
    assert first["truncation"] == "auto" and first["reasoning"] == {"summary": "concise"}
    assert "previous_response_id" not in first
    assert "headless Chromium" in first["instructions"]
    (task,) = first["input"]
    assert task["role"] == "user" and task["content"][0] == {
        "type": "input_text",
        "text": "Fill in the form",
    }
    assert data_url_size(task["content"][1]["image_url"]) == (1280, 768)
    sent = openai_fake.responses
    for index, body in enumerate(bodies[1:], start=1):
        # Each turn chains on the last response and sends only the call's answer.
        assert body["previous_response_id"] == sent[index - 1]["id"]
        assert body["instructions"] == first["instructions"]
        (answer,) = body["input"]
        assert answer["call_id"] == calls[index - 1]["call_id"]
        assert "acknowledged_safety_checks" not in answer
        assert data_url_size(answer["output"]["image_url"]) == (1280, 768)

    assert ctx.types()[:6] == [
        "turn.started",
        "assistant.thinking",
        "turn.completed",
        "tool.call",
        "tool.result",
        "turn.started",
    ]
    assert ctx.of_type("assistant.thinking") == [{"text": "The field is in the middle"}]
    assert ctx.of_type("assistant.message") == [{"text": "All done"}]
    call = ctx.of_type("tool.call")[0]
    assert call == {
        "call_id": calls[0]["call_id"],
        "tool": "computer_use_preview",
        "action": {
            "type": "click",
            "x": 1280,
            "y": 768,
            "button": "left",
            "count": 1,
            "modifiers": [],
        },
        "input": {"type": "click", "x": 640, "y": 384, "button": "left"},
    }
    result = ctx.of_type("tool.result")[0]
    assert result["is_error"] is False and result["not_executed"] is False
    assert result["screenshot"]["width"] == 1280
    assert result["screenshot"]["page_url"] == "https://example.com/"
    completed = ctx.of_type("turn.completed")[0]
    usage = sent[0]["usage"]
    assert completed["stop_reason"] == "completed"
    assert completed["usage"] == {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cache_read_input_tokens": usage["input_tokens_details"]["cached_tokens"],
        "cache_creation_input_tokens": 0,
    }
    # Six turns, each written once with its response and once more with its results.
    assert sorted(ctx.turns) == [0, 1, 2, 3, 4, 5]
    assert len(ctx.turn_writes) == 11
    assert ctx.turns[0].response is not None and ctx.turns[0].response["id"] == sent[0]["id"]
    assert ctx.turns[0].actions[0]["call_id"] == calls[0]["call_id"]
    assert ctx.turns[0].request["previous_response_id"] is None
    assert ctx.turns[1].request["previous_response_id"] == sent[0]["id"]
    # Screenshots are kept by reference in the state.
    assert "image_url" not in str(ctx.state["items"])


async def test_ga_batch_runs_in_order_and_stops_at_the_first_failure(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK, TYPE, KEYS])
    openai_fake.enqueue(response(call), response(message("Typing failed")))
    computer = FakeComputer(Display(1280, 800), fail_on={"type"})
    ctx = MemoryContext(openai_config(), computer)

    outcome = await OpenAILoop(openai_client).run(ctx, {}, "go", resumed=False)

    assert outcome == RunOutcome("end_turn", output="Typing failed")
    assert computer.actions == [Click(x=100, y=200), Type(text="hello")]  # the keypress never ran
    first, second = openai_bodies(openai_fake)
    assert first["tools"] == [{"type": "computer"}] and first["reasoning"] == {"summary": "auto"}
    answer = output_of(second)
    assert answer["call_id"] == call["call_id"]
    assert data_url_size(answer["output"]["image_url"]) == (1280, 800)
    assert [i["type"] for i in second["input"]] == ["computer_call_output", "message"]
    (note,) = notes_of(second)
    assert note.startswith("Action 2 of 3 (type) failed: Injected failure for type.")
    assert "Action 3 (keypress) was not executed." in note

    calls, results = ctx.of_type("tool.call"), ctx.of_type("tool.result")
    assert [c["call_id"] for c in calls] == [call["call_id"]] * 3
    assert [c["tool"] for c in calls] == ["computer"] * 3
    assert [c["input"] for c in calls] == [CLICK, TYPE, KEYS]
    assert ctx.types()[2:8] == ["tool.call", "tool.result"] * 3
    assert [(r["is_error"], r["not_executed"]) for r in results] == [
        (False, False),
        (True, False),
        (True, True),
    ]
    # One screenshot for the call: the one after the failure.
    assert [r["screenshot"] is not None for r in results] == [False, True, False]
    assert [r["is_error"] for r in ctx.turns[0].results] == [False, True, True]
    # Deferred, each to the write that follows it (MemoryContext checks that no
    # action ran and no request went out before that write): both replies, the
    # click's result inside the batch, the call's answer.
    assert ctx.deferred_count == 4


async def test_chaining_across_turns_and_into_a_follow_up_run(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK, TYPE])
    openai_fake.enqueue(response(reasoning("Plan"), call), response(message("Done")))
    computer = FakeComputer(Display(1280, 800))
    loop = OpenAILoop(openai_client)
    first = MemoryContext(openai_config(), computer)
    assert (await loop.run(first, {}, "go", resumed=False)).output == "Done"
    assert computer.actions == [Click(x=100, y=200), Type(text="hello")]

    openai_fake.enqueue(response(message("Again")))
    follow = MemoryContext(openai_config(run_id="run_2"), computer, shots=first.shots)
    outcome = await loop.run(follow, first.state, "And now?", resumed=False)

    assert outcome == RunOutcome("end_turn", output="Again")
    body = openai_bodies(openai_fake)[-1]
    assert body["previous_response_id"] == openai_fake.responses[1]["id"]
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And now?"}]}
    ]
    assert follow.of_type("turn.started") == [{"turn": 0, "model": "gpt-5.4"}]


@pytest.mark.parametrize(
    "lost",
    [
        # What the API answers for an expired or unknown previous response...
        {
            "status": 400,
            "body": {
                "error": {
                    "message": "Previous response with id 'x' not found.",
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                }
            },
        },
        # ...and what a proxy in front of it may answer instead.
        {"status": 404, "message": "Previous response with id 'x' not found."},
    ],
    ids=["400-previous_response_not_found", "404"],
)
async def test_a_lost_previous_response_falls_back_to_resending_everything(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI, lost: dict[str, Any]
) -> None:
    openai_fake.enqueue(response(reasoning("Plan"), computer_call(CLICK)), response(message("Hi")))
    # A GA model that still sends single-action calls is fine, but this one is preview.
    config = openai_config(model="computer-use-preview", image_retention=1)
    computer = FakeComputer(Display(1280, 768))
    loop = OpenAILoop(openai_client)
    first = MemoryContext(config, computer)
    await loop.run(first, {}, "go", resumed=False)

    # The stored response expired: the chained request gets a 404, the loop resends.
    openai_fake.fail_next(lost.pop("status"), **lost)
    openai_fake.enqueue(response(computer_call(TYPE)), response(message("Typed")))
    follow = MemoryContext(
        openai_config(model="computer-use-preview", image_retention=1, run_id="run_2"),
        computer,
        shots=first.shots,
    )
    outcome = await loop.run(follow, first.state, "Type hello", resumed=False)

    assert outcome == RunOutcome("end_turn", output="Typed")
    bodies = openai_bodies(openai_fake)
    assert len(bodies) == 5
    lost, resent, chained = bodies[2:]
    assert lost["previous_response_id"] == openai_fake.responses[1]["id"]
    assert "previous_response_id" not in resent
    assert [i["type"] for i in resent["input"]] == [
        "message",
        "reasoning",
        "computer_call",
        "computer_call_output",
        "message",
        "message",
    ]
    reasoning_item = resent["input"][1]
    assert reasoning_item["encrypted_content"].startswith("gAAAA")
    # image_retention=1: the task's screenshot became text; the call output kept its image.
    assert [p["type"] for p in resent["input"][0]["content"]] == ["input_text", "input_text"]
    assert data_url_size(resent["input"][3]["output"]["image_url"]) == (1280, 768)
    # Chaining resumes on the response the fallback produced.
    assert chained["previous_response_id"] == openai_fake.responses[2]["id"]
    assert follow.turns[0].request["fallback"] == "previous_response_not_found"
    assert follow.state["marks"][0]["response_id"] == openai_fake.responses[2]["id"]
