"""Durability of AnthropicLoop: resuming from a checkpoint in a "new process",
repair and follow-up runs, max_steps, cancellation. The strict fake rejects any
transcript the real API would reject."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest

from app.agents import anthropic_transcript as tx
from app.agents.anthropic import AnthropicLoop
from app.agents.base import RunLimitExceeded, RunOutcome
from app.computers.base import Click, Key, Type
from app.computers.fake import FakeComputer
from tests.agents.conftest import Crash, CrashingComputer, MemoryContext, make_config
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)


def three_calls() -> list[dict[str, Any]]:
    return [
        computer_call("left_click", coordinate=[10, 10]),
        computer_call("type", text="hello"),
        computer_call("key", text="Return"),
    ]


async def crash_during(
    client: anthropic.AsyncAnthropic, fake: FakeAnthropic, calls: list[dict[str, Any]], at: int
) -> MemoryContext:
    """Run until the `at`-th action "kills the process"; return the dead process's context."""
    fake.enqueue(tool_use_message(*calls))
    ctx = MemoryContext(make_config(), CrashingComputer(make_config().display, crash_at=at))
    with pytest.raises(Crash):
        await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)
    return ctx


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in body["messages"][-1]["content"] if b["type"] == "tool_result"]


async def test_resume_with_an_action_in_flight_does_not_run_it_again(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    calls = three_calls()
    dead = await crash_during(client, fake, calls, at=2)
    # The intent record: committed with its tool.call event before the action ran.
    assert dead.state["in_flight"]["call_id"] == calls[1]["id"]
    assert dead.events[-1] == ("tool.call", dead.of_type("tool.call")[-1])

    fake.enqueue(text_message("Recovered"))
    computer = FakeComputer()
    ctx = MemoryContext(make_config(), computer, shots=dead.shots)
    outcome = await AnthropicLoop(client).run(ctx, dead.state, None, resumed=True)

    assert outcome == RunOutcome("end_turn", output="Recovered")
    assert computer.actions == []  # neither the interrupted action nor the one after it
    ok, interrupted, skipped = tool_results(fake.requests[-1].body)
    assert ok["is_error"] is False
    assert interrupted["is_error"] is True
    assert interrupted["content"][0] == {"type": "text", "text": tx.INTERRUPTED}
    assert interrupted["content"][1]["type"] == "image"  # a fresh screenshot
    assert skipped["is_error"] is True
    assert skipped["content"][0]["text"] == tx.NOT_EXECUTED
    assert ctx.types()[:3] == ["tool.result", "tool.call", "tool.result"]
    assert ctx.of_type("turn.started") == [{"turn": 1, "model": "claude-sonnet-4-6"}]
    # The turn that was cut short is recorded with all three results.
    assert [r["is_error"] for r in ctx.turns[0].results] == [False, True, True]


async def test_resume_between_actions_runs_only_what_did_not_start(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    calls = three_calls()
    dead = await crash_during(client, fake, calls, at=2)
    # The checkpoint written right after the first action's result.
    after_first = next(
        s
        for s in dead.states
        if s["in_flight"] is None and len(tx.unanswered_tool_uses(s["messages"])) == 2
    )

    fake.enqueue(text_message("Done"))
    computer = FakeComputer()
    ctx = MemoryContext(make_config(), computer, shots=dead.shots)
    await AnthropicLoop(client).run(ctx, after_first, None, resumed=True)

    assert computer.actions == [Type(text="hello"), Key(keys=["Enter"])]
    assert [r["is_error"] for r in tool_results(fake.requests[-1].body)] == [False, False, False]


async def test_resume_after_the_final_answer_makes_no_call(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(text_message("The price is $10"))
    first = MemoryContext(make_config(), FakeComputer())
    await AnthropicLoop(client).run(first, {}, "go", resumed=False)

    ctx = MemoryContext(make_config(), FakeComputer(), shots=first.shots)
    outcome = await AnthropicLoop(client).run(ctx, first.state, None, resumed=True)

    assert outcome == RunOutcome("end_turn", output="The price is $10")
    assert len(fake.requests) == 1


async def test_resume_after_a_crash_during_the_model_call(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    first = MemoryContext(make_config(), FakeComputer())

    async def die(call: Any) -> Any:
        raise Crash("died waiting for the model")

    first.call_provider = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await AnthropicLoop(client).run(first, {}, "go", resumed=False)

    fake.enqueue(text_message("ok"))
    ctx = MemoryContext(make_config(), FakeComputer(), shots=first.shots)
    assert (await AnthropicLoop(client).run(ctx, first.state, None, resumed=True)).output == "ok"
    assert ctx.of_type("turn.started") == [{"turn": 0, "model": "claude-sonnet-4-6"}]
    assert fake.requests[0].body["messages"][0]["content"][0]["text"] == "go"


async def test_follow_up_run_after_repair_is_accepted(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    calls = three_calls()
    dead = await crash_during(client, fake, calls, at=1)
    loop = AnthropicLoop(client)
    repaired = loop.repair(dead.state, "Interrupted: the run was cancelled.")

    fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[5, 5])), text_message("ok")
    )
    computer = FakeComputer()
    ctx = MemoryContext(make_config(run_id="run_2"), computer, shots=dead.shots)
    outcome = await loop.run(ctx, repaired, "Try again", resumed=False)

    assert outcome.output == "ok"
    assert computer.actions == [Click(x=5, y=5)]
    last = fake.requests[1].body["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result"] * 3 + ["text"]
    assert last[0]["content"][0]["text"] == "Interrupted: the run was cancelled."
    assert last[-1]["text"] == "Try again"
    assert ctx.of_type("turn.started")[0]["turn"] == 0  # turn indexes are per run


async def test_max_steps_stops_at_a_step_boundary(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(*[tool_use_message(computer_call("screenshot")) for _ in range(2)])
    ctx = MemoryContext(make_config(max_steps=2), FakeComputer())
    loop = AnthropicLoop(client)
    with pytest.raises(RunLimitExceeded) as caught:
        await loop.run(ctx, {}, "go", resumed=False)
    assert caught.value.stop_reason == "max_steps"
    assert len(fake.requests) == 2
    assert tx.unanswered_tool_uses(ctx.state["messages"]) == []

    # The transcript is valid as it stands: a follow-up run needs no repair.
    fake.enqueue(text_message("ok"))
    follow = MemoryContext(make_config(run_id="run_2"), FakeComputer(), shots=ctx.shots)
    assert (await loop.run(follow, ctx.state, "continue", resumed=False)).output == "ok"


async def test_cancellation_propagates_and_repair_makes_the_transcript_valid(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(tool_use_message(computer_call("wait", duration=30)))
    ctx = MemoryContext(make_config(), FakeComputer())
    loop = AnthropicLoop(client)
    task = asyncio.create_task(loop.run(ctx, {}, "go", resumed=False))
    await asyncio.wait_for(ctx.wait_for("tool.call"), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.state["in_flight"] is not None

    fake.enqueue(text_message("ok"))
    repaired = loop.repair(ctx.state, "Interrupted: the run was cancelled.")
    follow = MemoryContext(make_config(run_id="run_2"), FakeComputer(), shots=ctx.shots)
    assert (await loop.run(follow, repaired, "again", resumed=False)).output == "ok"


class Suspended(Exception):
    """Stands for the runner's RunSuspended: raised from a checkpoint, after it committed."""


async def test_suspension_after_the_last_result_still_records_the_turn(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(tool_use_message(computer_call("screenshot")))
    draining = MemoryContext(make_config(), FakeComputer())
    commit = draining.checkpoint

    async def commit_then_suspend(state: dict[str, Any], events: Any = (), **_: Any) -> None:
        await commit(state, events)  # draining, the service commits even a deferred one
        if any(type_ == "tool.result" for type_, _ in events):
            raise Suspended

    draining.checkpoint = commit_then_suspend  # type: ignore[method-assign]
    with pytest.raises(Suspended):
        await AnthropicLoop(client).run(draining, {}, "go", resumed=False)
    assert draining.turns[0].results == []  # written with the response only

    fake.enqueue(text_message("ok"))
    ctx = MemoryContext(make_config(), FakeComputer(), shots=draining.shots)
    await AnthropicLoop(client).run(ctx, draining.state, None, resumed=True)
    assert [r["is_error"] for r in ctx.turns[0].results] == [False]
