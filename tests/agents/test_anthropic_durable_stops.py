"""AnthropicLoop: a decision to end the run survives a drain or a crash.

A rejected or expired safety check, a reply cut short twice, an exceeded context
window and a failed action each end (or cut short) the run in the same checkpoint
that answers the calls they leave unrun. A run resumed from that checkpoint (after
a drain raised from it, or a crash before the runner ended the run) therefore ends
the same way without calling the model or the computer again. The strict fake
rejects any transcript the real API would reject."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import anthropic
import pytest

from app.agents import anthropic_transcript as tx
from app.agents.anthropic import AnthropicLoop
from app.agents.base import (
    CheckRequest,
    Event,
    ProviderError,
    RunHalted,
    RunOutcome,
    SafetyDecision,
)
from app.computers.fake import FakeComputer
from tests.agents.conftest import Crash, CrashingComputer, MemoryContext, make_config
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)

POLICY = CheckRequest("action_requires_ack", "The session's policy requires acknowledgment.")
REJECTED = SafetyDecision(False, stop_reason="safety_check_rejected", reason="too risky")
EXPIRED = SafetyDecision(False, stop_reason="safety_check_timeout", reason="timed out")
How = Literal["suspend", "crash"]


class Suspended(Exception):
    """Stands for the runner's RunSuspended: raised from a checkpoint, after it committed."""


def suspend_at(ctx: MemoryContext, when: Callable[[Sequence[Event]], bool]) -> None:
    """The service draining: the first checkpoint whose events satisfy `when` commits,
    then raises Suspended (as ServiceRunContext.checkpoint raises RunSuspended)."""
    commit = ctx.checkpoint

    async def commit_then_suspend(
        state: dict[str, Any], events: Sequence[Event] = (), *, defer: bool = False
    ) -> None:
        # Draining, the service commits even a deferred checkpoint: one that suspends.
        await commit(state, events, defer=defer and not when(events))
        if when(events):
            raise Suspended

    ctx.checkpoint = commit_then_suspend  # type: ignore[method-assign]


def has_result(events: Sequence[Event]) -> bool:
    return any(type_ == "tool.result" for type_, _ in events)


def results_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in body["messages"][-1]["content"] if b["type"] == "tool_result"]


def three_calls() -> list[dict[str, Any]]:
    return [
        computer_call("left_click", coordinate=[10, 10]),
        computer_call("type", text="hello"),
        computer_call("key", text="Return"),
    ]


@pytest.mark.parametrize("how", ["suspend", "crash"])
@pytest.mark.parametrize("decision", [REJECTED, EXPIRED], ids=["rejected", "expired"])
async def test_a_halt_survives_a_suspend_or_a_crash_and_a_follow_up_works(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, how: How, decision: SafetyDecision
) -> None:
    calls = three_calls()
    fake.enqueue(tool_use_message(*calls))
    computer = FakeComputer()
    loop = AnthropicLoop(client)
    dead = MemoryContext(make_config(), computer)
    dead.policy, dead.decisions = [POLICY], [decision]
    if how == "suspend":
        # Drains right after the checkpoint that answers the rejected call.
        suspend_at(dead, has_result)
    with pytest.raises(Suspended if how == "suspend" else RunHalted):
        await loop.run(dead, {}, "go", resumed=False)

    state = dead.state
    assert state["halted"]["stop_reason"] == decision.stop_reason
    assert tx.unanswered_tool_uses(state["messages"]) == []  # the siblings too, at once
    assert [r["not_executed"] for r in dead.of_type("tool.result")] == [True] * 3
    # The turn is recorded with every result.
    assert [r["not_executed"] for r in dead.turns[0].results] == [True] * 3
    assert computer.actions == []

    # The resumed run halts again: no model call, no second question to a human.
    again = MemoryContext(make_config(), computer, shots=dead.shots)
    with pytest.raises(RunHalted) as halted:
        await loop.run(again, state, "go", resumed=True)
    assert halted.value.stop_reason == decision.stop_reason
    assert again.events == [] and again.safety_calls == []
    assert len(fake.requests) == 1 and computer.actions == []

    # The runner saves this state after RunHalted; a follow-up run starts afresh.
    fake.enqueue(text_message("Understood"))
    follow = MemoryContext(make_config(run_id="run_2"), computer, shots=dead.shots)
    outcome = await loop.run(follow, state, "Do not click", resumed=False)
    assert outcome == RunOutcome("end_turn", output="Understood")
    assert follow.state["halted"] is None
    last = fake.requests[-1].body["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result"] * 3 + ["text"]
    assert [b["content"][0]["text"] for b in last[1:3]] == [tx.NOT_EXECUTED] * 2
    assert fake.script_errors == []


@pytest.mark.parametrize("how", ["suspend", "crash"])
@pytest.mark.parametrize(
    ("replies", "kind"),
    [
        ([text_message("cut", stop_reason="max_tokens")] * 2, "max_tokens"),
        (
            [text_message("Partial", stop_reason="model_context_window_exceeded")],
            "context_window_exceeded",
        ),
    ],
    ids=["max_tokens_twice", "context_window"],
)
async def test_a_failed_reply_fails_the_resumed_run_too(
    fake: FakeAnthropic,
    client: anthropic.AsyncAnthropic,
    how: How,
    replies: list[dict[str, Any]],
    kind: str,
) -> None:
    fake.enqueue(*replies)
    loop = AnthropicLoop(client)
    dead = MemoryContext(make_config(), FakeComputer())
    if how == "suspend":
        # Drains right after the checkpoint of the reply that fails the run.
        last_turn = len(replies) - 1
        suspend_at(
            dead,
            lambda events: any(t == "turn.completed" and d["turn"] == last_turn for t, d in events),
        )
    with pytest.raises(Suspended if how == "suspend" else ProviderError):
        await loop.run(dead, {}, "go", resumed=False)
    assert dead.state["failed"]["type"] == kind

    again = MemoryContext(make_config(), FakeComputer(), shots=dead.shots)
    with pytest.raises(ProviderError) as failed:
        await loop.run(again, dead.state, "go", resumed=True)
    assert failed.value.type == kind
    assert again.events == [] and len(fake.requests) == len(replies)

    # The runner repairs after a ProviderError: the marker goes, a follow-up works.
    repaired = loop.repair(dead.state, "Interrupted: the provider call failed.")
    assert repaired["failed"] is None and repaired["halted"] is None
    fake.enqueue(text_message("ok"))
    follow = MemoryContext(make_config(run_id="run_2"), FakeComputer(), shots=dead.shots)
    assert (await loop.run(follow, repaired, "again", resumed=False)).output == "ok"
    assert fake.script_errors == []


@pytest.mark.parametrize("failure", ["computer_error", "invalid_input"])
async def test_siblings_of_a_failed_action_never_run_after_a_suspend(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, failure: str
) -> None:
    calls = three_calls()
    if failure == "invalid_input":
        calls[0] = computer_call("left_click", coordinate="the button")
    fake.enqueue(tool_use_message(*calls))
    loop = AnthropicLoop(client)
    dead = MemoryContext(make_config(), FakeComputer(fail_on={"click"}))
    suspend_at(dead, has_result)  # right after the failed action's answer
    with pytest.raises(Suspended):
        await loop.run(dead, {}, "go", resumed=False)
    assert tx.unanswered_tool_uses(dead.state["messages"]) == []

    fake.enqueue(text_message("ok"))
    computer = FakeComputer()
    ctx = MemoryContext(make_config(), computer, shots=dead.shots)
    assert (await loop.run(ctx, dead.state, "go", resumed=True)).output == "ok"

    assert computer.actions == []  # stopped at the first failure, resume or not
    failed, *skipped = results_of(fake.requests[-1].body)
    assert failed["is_error"] is True
    assert [b["content"][0]["text"] for b in skipped] == [tx.NOT_EXECUTED] * 2
    assert [r["is_error"] for r in ctx.turns[0].results] == [True] * 3
    assert fake.script_errors == []


async def test_siblings_of_an_interrupted_action_never_run_after_a_suspend(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(tool_use_message(*three_calls()))
    loop = AnthropicLoop(client)
    dead = MemoryContext(make_config(), CrashingComputer(make_config().display, crash_at=1))
    with pytest.raises(Crash):
        await loop.run(dead, {}, "go", resumed=False)
    assert dead.state["in_flight"] is not None

    # The restarted process answers the interrupted action, then drains.
    draining = MemoryContext(make_config(), FakeComputer(), shots=dead.shots)
    suspend_at(draining, has_result)
    with pytest.raises(Suspended):
        await loop.run(draining, dead.state, "go", resumed=True)

    fake.enqueue(text_message("ok"))
    computer = FakeComputer()
    ctx = MemoryContext(make_config(), computer, shots=dead.shots)
    assert (await loop.run(ctx, draining.state, "go", resumed=True)).output == "ok"
    assert computer.actions == []
    interrupted, *skipped = results_of(fake.requests[-1].body)
    assert interrupted["content"][0]["text"] == tx.INTERRUPTED
    assert [b["content"][0]["text"] for b in skipped] == [tx.NOT_EXECUTED] * 2
    assert fake.script_errors == []
