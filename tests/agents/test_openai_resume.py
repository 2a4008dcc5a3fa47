"""Durability of OpenAILoop: resuming from a checkpoint in a "new process", repair after
a cancel, and how a run stops (max_steps, incomplete replies, refusals). The strict fake
rejects any conversation the real API would reject."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from app.agents.base import ProviderError, RunLimitExceeded, RunOutcome
from app.agents.openai import OpenAILoop
from app.agents.openai_run import CONTINUE_PROMPT
from app.computers.base import Display, Key, Type
from app.computers.fake import FakeComputer
from tests.agents.conftest import (
    Crash,
    CrashingComputer,
    MemoryContext,
    data_url_size,
    openai_bodies,
    openai_config,
)
from tests.fakes.openai_server import FakeOpenAI, computer_call, message, reasoning, response

SCREEN = Display(1280, 800)
CLICK = {"type": "click", "x": 100, "y": 200, "button": "left"}
TYPE = {"type": "type", "text": "hello"}
KEYS = {"type": "keypress", "keys": ["ENTER"]}


def user_texts(body: dict[str, Any]) -> list[str]:
    return [
        part["text"]
        for item in body["input"]
        if item["type"] == "message" and item["role"] == "user"
        for part in item["content"]
        if part["type"] == "input_text"
    ]


async def crash_during(
    client: openai.AsyncOpenAI, fake: FakeOpenAI, call: dict[str, Any], at: int
) -> MemoryContext:
    """Run until the `at`-th action "kills the process"; return the dead process's context."""
    fake.enqueue(response(reasoning("Go"), call))
    ctx = MemoryContext(openai_config(), CrashingComputer(SCREEN, crash_at=at))
    with pytest.raises(Crash):
        await OpenAILoop(client).run(ctx, {}, "go", resumed=False)
    return ctx


async def test_resume_with_an_action_in_flight_does_not_run_it_again(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK, TYPE, KEYS])
    dead = await crash_during(openai_client, openai_fake, call, at=2)
    # The intent record: committed with its tool.call event before the action ran.
    assert dead.state["in_flight"]["index"] == 1
    assert dead.events[-1] == ("tool.call", dead.of_type("tool.call")[-1])

    openai_fake.enqueue(response(message("Recovered")))
    computer = FakeComputer(SCREEN)
    ctx = MemoryContext(openai_config(), computer, shots=dead.shots)
    outcome = await OpenAILoop(openai_client).run(ctx, dead.state, None, resumed=True)

    assert outcome == RunOutcome("end_turn", output="Recovered")
    assert computer.actions == []  # neither the interrupted action nor the one after it
    body = openai_bodies(openai_fake)[-1]
    assert body["previous_response_id"] == openai_fake.responses[0]["id"]
    answer, _note = body["input"]
    assert answer["call_id"] == call["call_id"]
    assert data_url_size(answer["output"]["image_url"]) == (1280, 800)
    (note,) = user_texts(body)
    assert "Action 2 of 3 (type) may or may not have taken effect." in note
    assert "Action 3 (keypress) was not executed." in note
    assert ctx.types()[:3] == ["tool.result", "tool.call", "tool.result"]
    interrupted, skipped = ctx.of_type("tool.result")[:2]
    assert interrupted["is_error"] and not interrupted["not_executed"]
    assert interrupted["screenshot"] is not None
    assert skipped["not_executed"] is True
    assert [r["is_error"] for r in ctx.turns[0].results] == [False, True, True]


async def test_resume_between_actions_runs_only_what_did_not_start(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK, TYPE, KEYS])
    dead = await crash_during(openai_client, openai_fake, call, at=2)
    # The checkpoint written right after the first action's result.
    after_first = next(
        s
        for s in dead.states
        if s["progress"] and s["progress"]["done"] == 1 and not s["in_flight"]
    )

    openai_fake.enqueue(response(message("Done")))
    computer = FakeComputer(SCREEN)
    ctx = MemoryContext(openai_config(), computer, shots=dead.shots)
    await OpenAILoop(openai_client).run(ctx, after_first, None, resumed=True)

    assert computer.actions == [Type(text="hello"), Key(keys=["Enter"])]
    body = openai_bodies(openai_fake)[-1]
    assert [i["type"] for i in body["input"]] == ["computer_call_output"]


async def test_repair_after_a_cancel_mid_action_answers_with_the_last_screenshot(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK, TYPE])
    openai_fake.enqueue(response(call))
    loop = OpenAILoop(openai_client)
    computer = FakeComputer(SCREEN, delay_s=5)
    ctx = MemoryContext(openai_config(), computer)
    task = asyncio.create_task(loop.run(ctx, {}, "go", resumed=False))
    await ctx.wait_for("tool.call")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    repaired = loop.repair(ctx.state, "Interrupted: the run was cancelled.")

    assert ctx.state["in_flight"] is not None  # repair is pure
    assert repaired["in_flight"] is None and repaired["progress"] is None
    assert repaired["needs_screenshot"] is True
    computer.delay_s = 0
    openai_fake.enqueue(response(message("Ok")))
    follow = MemoryContext(openai_config(run_id="run_2"), computer, shots=ctx.shots)
    assert (await loop.run(follow, repaired, "Carry on", resumed=False)).output == "Ok"
    body = openai_bodies(openai_fake)[-1]
    assert body["previous_response_id"] == openai_fake.responses[0]["id"]
    assert [i["type"] for i in body["input"]] == ["computer_call_output", "message", "message"]
    note, follow_up = user_texts(body)
    assert note.startswith("Interrupted: the run was cancelled. Action 1 of 2 (click) may or")
    assert "Action 2 (type) was not executed." in note
    assert follow_up == "Carry on"
    # The follow-up shows the model the screen as it is now.
    assert body["input"][2]["content"][1]["type"] == "input_image"


async def test_repair_drops_a_call_that_never_started(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    call = computer_call(TYPE)
    openai_fake.enqueue(response(reasoning("Type"), call))
    ctx = MemoryContext(openai_config(model="computer-use-preview"), FakeComputer(SCREEN))

    real = ctx.checkpoint

    async def checkpoint(state: dict[str, Any], events: Any = (), *, defer: bool = False) -> None:
        await real(state, events, defer=defer)
        if state["current_turn"] is not None:
            raise Crash("cancelled right after the model answered")

    ctx.checkpoint = checkpoint  # type: ignore[method-assign]
    loop = OpenAILoop(openai_client)
    with pytest.raises(Crash):
        await loop.run(ctx, {}, "go", resumed=False)

    repaired = loop.repair(ctx.state, "Interrupted: the run was cancelled.")
    assert [i["type"] for i in repaired["items"]] == ["message", "message"]
    assert repaired["marks"] == []  # the only response contained the call: resend all
    assert repaired["needs_screenshot"] is False
    openai_fake.enqueue(response(message("Fine")))
    follow = MemoryContext(
        openai_config(model="computer-use-preview", run_id="run_2"),
        FakeComputer(SCREEN),
        shots=ctx.shots,
    )
    assert (await loop.run(follow, repaired, "Stop", resumed=False)).output == "Fine"
    body = openai_bodies(openai_fake)[-1]
    assert "previous_response_id" not in body
    assert "(type action) was not executed" in user_texts(body)[1]


async def test_max_steps_stops_at_a_step_boundary(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    openai_fake.enqueue(response(computer_call(actions=[CLICK])))
    ctx = MemoryContext(openai_config(max_steps=1), FakeComputer(SCREEN))
    with pytest.raises(RunLimitExceeded) as stopped:
        await OpenAILoop(openai_client).run(ctx, {}, "go", resumed=False)
    assert stopped.value.stop_reason == "max_steps"
    assert len(openai_fake.requests) == 1
    assert ctx.state["items"][-1]["type"] == "computer_call_output"  # nothing left unanswered


async def test_an_incomplete_reply_is_continued_once(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    cut = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    openai_fake.enqueue(response(message("The answer is"), **cut), response(message("42")))
    loop = OpenAILoop(openai_client)
    ctx = MemoryContext(openai_config(), FakeComputer(SCREEN))
    outcome = await loop.run(ctx, {}, "go", resumed=False)

    assert outcome == RunOutcome("end_turn", output="42")
    assert user_texts(openai_bodies(openai_fake)[1]) == [CONTINUE_PROMPT]
    assert ctx.of_type("turn.completed")[0]["stop_reason"] == "max_output_tokens"

    openai_fake.enqueue(response(**cut), response(**cut))  # twice in a row: give up
    again = MemoryContext(openai_config(run_id="run_2"), FakeComputer(SCREEN), shots=ctx.shots)
    with pytest.raises(ProviderError) as failed:
        await loop.run(again, ctx.state, "more", resumed=False)
    assert failed.value.type == "max_tokens"

    # A crash right after that checkpoint: the resumed run fails the same way, at once.
    sent = len(openai_fake.requests)
    resumed = MemoryContext(openai_config(run_id="run_2"), FakeComputer(SCREEN), shots=ctx.shots)
    with pytest.raises(ProviderError) as again_failed:
        await loop.run(resumed, again.state, "more", resumed=True)
    assert again_failed.value.type == "max_tokens"
    assert len(openai_fake.requests) == sent  # no model call


async def test_a_refusal_ends_the_run_and_its_call_is_never_answered(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    refusal = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "refusal", "refusal": "I can't help with that."}],
    }
    openai_fake.enqueue(response(refusal, computer_call(actions=[CLICK])))
    computer = FakeComputer(SCREEN)
    loop = OpenAILoop(openai_client)
    ctx = MemoryContext(openai_config(), computer)

    outcome = await loop.run(ctx, {}, "go", resumed=False)

    assert outcome == RunOutcome("refusal", output="I can't help with that.")
    assert computer.actions == []
    assert ctx.of_type("assistant.message") == [{"text": "I can't help with that."}]
    assert [i["type"] for i in ctx.state["items"]] == ["message", "message"]
    openai_fake.enqueue(response(message("Ok")))
    follow = MemoryContext(openai_config(run_id="run_2"), computer, shots=ctx.shots)
    assert (await loop.run(follow, ctx.state, "Never mind", resumed=False)).output == "Ok"
    assert "previous_response_id" not in openai_bodies(openai_fake)[-1]
