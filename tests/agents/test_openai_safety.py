"""Safety checks in OpenAILoop: provider pending_safety_checks and the service's policy
checks, approved, rejected, expired, resumed; the strict fake rejects any unacknowledged
check, any answer to a rejected call and any follow-up that does not branch properly."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from app.agents.base import CheckRequest, RunHalted, RunOutcome, SafetyDecision
from app.agents.openai import OpenAILoop
from app.computers.base import Click, Display, Type
from app.computers.fake import FakeComputer
from tests.agents.conftest import MemoryContext, openai_bodies, openai_config
from tests.fakes.openai_server import (
    FakeOpenAI,
    computer_call,
    message,
    reasoning,
    response,
    safety_check,
)

CLICK = {"type": "click", "x": 100, "y": 200, "button": "left"}
TYPE = {"type": "type", "text": "hello"}
POLICY = CheckRequest("action_requires_ack", "The session's policy requires acknowledgment.")
SCREEN = Display(1280, 768)  # what computer_use_preview is shown as is
REJECTED = SafetyDecision(False, stop_reason="safety_check_rejected", reason="too risky")


def user_texts(body: dict[str, Any]) -> list[str]:
    return [
        part["text"]
        for item in body["input"]
        if item["type"] == "message" and item["role"] == "user"
        for part in item["content"]
        if part["type"] == "input_text"
    ]


async def test_an_approved_call_acknowledges_exactly_the_provider_checks(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    check = safety_check("irrelevant_domain")
    call = computer_call(CLICK, pending_safety_checks=[check])
    openai_fake.enqueue(response(reasoning("Click"), call), response(message("Clicked")))
    computer = FakeComputer(SCREEN)
    ctx = MemoryContext(openai_config(model="computer-use-preview"), computer)
    ctx.policy = [POLICY]
    ctx.decisions = [SafetyDecision(True)]

    outcome = await OpenAILoop(openai_client).run(ctx, {}, "go", resumed=False)

    assert outcome == RunOutcome("end_turn", output="Clicked")
    assert computer.actions == [Click(x=100, y=200)]
    (asked,) = ctx.safety_calls
    assert asked.call_id == call["call_id"]
    assert asked.checks == [
        CheckRequest("irrelevant_domain", check["message"], provider_check_id=check["id"]),
        POLICY,
    ]
    assert asked.action == {
        "type": "click",
        "x": 100,
        "y": 200,
        "button": "left",
        "count": 1,
        "modifiers": [],
    }
    assert asked.state["awaiting"] == call["call_id"]  # the persisted state shows the wait
    assert ctx.policy_seen == [asked.action]
    answer = openai_bodies(openai_fake)[1]["input"][0]
    # The policy check is the service's own: OpenAI only hears about its own check.
    assert answer["acknowledged_safety_checks"] == [check]
    # The tool.call is announced before the wait and not repeated when the action runs.
    assert ctx.types()[3:7] == [
        "tool.call",
        "safety_check.pending",
        "safety_check.pending",
        "run.awaiting_safety_check",
    ]
    assert ctx.types().count("tool.call") == 1
    assert ctx.state["awaiting"] is None


async def test_policy_checks_cover_every_action_of_a_ga_batch(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    openai_fake.enqueue(response(computer_call(actions=[CLICK, TYPE])), response(message("Ok")))
    computer = FakeComputer(Display(1280, 800))
    ctx = MemoryContext(openai_config(), computer)
    ctx.policy = [POLICY]
    ctx.decisions = [SafetyDecision(True)]

    await OpenAILoop(openai_client).run(ctx, {}, "go", resumed=False)

    assert [a["type"] for a in ctx.policy_seen] == ["click", "type"]
    (asked,) = ctx.safety_calls
    assert asked.checks == [POLICY]  # the same check twice is asked once
    assert asked.action is not None and asked.action["type"] == "batch"
    assert [a["type"] for a in asked.action["actions"]] == ["click", "type"]
    assert computer.actions == [Click(x=100, y=200), Type(text="hello")]
    answer = openai_bodies(openai_fake)[1]["input"][0]
    assert "acknowledged_safety_checks" not in answer  # policy-only: nothing to acknowledge


@pytest.mark.parametrize("chained", [True, False])
async def test_a_rejected_call_is_never_answered_and_the_follow_up_branches(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI, chained: bool
) -> None:
    checked = computer_call(TYPE, pending_safety_checks=[safety_check()])
    first_call = computer_call(CLICK)
    if chained:  # the checked call comes in the second response
        openai_fake.enqueue(response(first_call), response(reasoning("Type"), checked))
    else:
        openai_fake.enqueue(response(reasoning("Type"), checked))
    computer = FakeComputer(SCREEN)
    loop = OpenAILoop(openai_client)
    ctx = MemoryContext(openai_config(model="computer-use-preview"), computer)
    ctx.decisions = [REJECTED]

    with pytest.raises(RunHalted) as halted:
        await loop.run(ctx, {}, "go", resumed=False)

    assert halted.value.stop_reason == "safety_check_rejected"
    assert computer.actions == ([Click(x=100, y=200)] if chained else [])
    assert len(openai_fake.requests) == (2 if chained else 1)  # nothing answered the call
    state = ctx.state
    assert checked["call_id"] not in str(state["items"])
    assert [i["type"] for i in state["items"]].count("reasoning") == 0
    assert state["halted"]["stop_reason"] == "safety_check_rejected"
    (result,) = [r for r in ctx.of_type("tool.result") if r["call_id"] == checked["call_id"]]
    assert result["not_executed"] is True and "too risky" in result["error"]

    # Resuming the halted run (a crash before the runner ended it) halts again, quietly.
    again = MemoryContext(openai_config(model="computer-use-preview"), computer, shots=ctx.shots)
    with pytest.raises(RunHalted):
        await loop.run(again, state, None, resumed=True)
    assert len(openai_fake.requests) == (2 if chained else 1)

    openai_fake.enqueue(response(message("Understood")))
    follow = MemoryContext(
        openai_config(model="computer-use-preview", run_id="run_2"), computer, shots=ctx.shots
    )
    outcome = await loop.run(follow, state, "Do not type anything", resumed=False)

    assert outcome == RunOutcome("end_turn", output="Understood")
    body = openai_bodies(openai_fake)[-1]
    if chained:
        # Branches from the response before the rejected call's, with the items that
        # answered it resent.
        assert body["previous_response_id"] == openai_fake.responses[0]["id"]
        assert [i["type"] for i in body["input"]] == [
            "computer_call_output",
            "message",
            "message",
        ]
        assert body["input"][0]["call_id"] == first_call["call_id"]
    else:
        assert "previous_response_id" not in body
        assert [i["type"] for i in body["input"]] == ["message", "message", "message"]
    note, follow_up = user_texts(body)[-2:]
    assert note.startswith("Rejected by a human: too risky.")
    assert "(type action) was not executed" in note
    assert follow_up == "Do not type anything"


async def test_an_expired_check_halts_with_safety_check_timeout(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    openai_fake.enqueue(response(computer_call(actions=[CLICK, TYPE])))
    computer = FakeComputer(Display(1280, 800))
    ctx = MemoryContext(openai_config(), computer)
    ctx.policy = [POLICY]
    ctx.decisions = [SafetyDecision(False, stop_reason="safety_check_timeout", reason="timed out")]

    with pytest.raises(RunHalted) as halted:
        await OpenAILoop(openai_client).run(ctx, {}, "go", resumed=False)

    assert halted.value.stop_reason == "safety_check_timeout"
    assert computer.actions == []
    results = ctx.of_type("tool.result")
    assert [r["not_executed"] for r in results] == [True, True]
    assert ctx.types().count("tool.call") == 2
    assert ctx.turns[0].results and len(ctx.turns[0].results) == 2


async def test_resume_while_awaiting_asks_again_for_the_same_call(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    check = safety_check()
    call = computer_call(CLICK, pending_safety_checks=[check])
    openai_fake.enqueue(response(call))
    loop = OpenAILoop(openai_client)
    dead = MemoryContext(openai_config(model="computer-use-preview"), FakeComputer(SCREEN))
    dead.decisions = [None]  # nobody answers before the "crash"
    task = asyncio.create_task(loop.run(dead, {}, "go", resumed=False))
    await dead.wait_for("run.awaiting_safety_check")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dead.state["awaiting"] == call["call_id"]

    openai_fake.enqueue(response(message("Done")))
    computer = FakeComputer(SCREEN)
    ctx = MemoryContext(openai_config(model="computer-use-preview"), computer, shots=dead.shots)
    ctx.decisions = [SafetyDecision(True)]
    outcome = await loop.run(ctx, dead.state, "go", resumed=True)

    assert outcome == RunOutcome("end_turn", output="Done")
    assert [c.call_id for c in ctx.safety_calls] == [call["call_id"]]
    assert computer.actions == [Click(x=100, y=200)]
    assert "tool.call" not in ctx.types()[:1]  # announced by the first process
    assert openai_bodies(openai_fake)[-1]["input"][0]["acknowledged_safety_checks"] == [check]


async def test_repair_after_a_cancel_while_awaiting_drops_the_call(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    first_call = computer_call(CLICK)
    checked = computer_call(TYPE, pending_safety_checks=[safety_check()])
    openai_fake.enqueue(response(first_call), response(reasoning("Type"), checked))
    loop = OpenAILoop(openai_client)
    computer = FakeComputer(SCREEN)
    ctx = MemoryContext(openai_config(model="computer-use-preview"), computer)
    ctx.decisions = [None]
    task = asyncio.create_task(loop.run(ctx, {}, "go", resumed=False))
    await ctx.wait_for("run.awaiting_safety_check")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    repaired = loop.repair(ctx.state, "Interrupted: the run was cancelled.")

    assert ctx.state["awaiting"] == checked["call_id"]  # repair is pure
    assert repaired["awaiting"] is None and repaired["current_turn"] is None
    assert checked["call_id"] not in str(repaired["items"])
    openai_fake.enqueue(response(message("Ok")))
    follow = MemoryContext(
        openai_config(model="computer-use-preview", run_id="run_2"), computer, shots=ctx.shots
    )
    assert (await loop.run(follow, repaired, "Stop", resumed=False)).output == "Ok"
    body = openai_bodies(openai_fake)[-1]
    assert body["previous_response_id"] == openai_fake.responses[0]["id"]
    assert user_texts(body)[0].startswith("Interrupted: the run was cancelled. Your last")
    assert computer.actions == [Click(x=100, y=200)]
