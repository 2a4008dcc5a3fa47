"""Both loops tell the context about an action as soon as the computer has run it,
before its screenshot and tool.result, and never about an action that did not run
(it failed, its input was invalid, a human rejected it, or an earlier one failed)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from app.agents.anthropic import AnthropicLoop
from app.agents.base import CheckRequest, RunHalted, SafetyDecision
from app.agents.openai import OpenAILoop
from app.computers.fake import FakeComputer
from tests.agents.conftest import MemoryContext, make_config, openai_config
from tests.fakes import anthropic_server as anth
from tests.fakes import openai_server as oai

CLICK_JSON = {"type": "click", "x": 10, "y": 20, "button": "left", "count": 1, "modifiers": []}


async def test_anthropic_notes_executed_actions_only(
    fake: anth.FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    click = anth.computer_call("left_click", coordinate=[10, 20])
    invalid = anth.computer_call("left_click", coordinate="nowhere")
    typing = anth.computer_call("type", text="hi")
    after = anth.computer_call("key", text="Return")
    fake.enqueue(
        anth.tool_use_message(click),
        anth.tool_use_message(invalid),
        anth.tool_use_message(typing, after),  # typing fails: `after` is skipped
        anth.tool_use_message(anth.computer_call("left_click", coordinate=[1, 1])),
    )
    ctx = MemoryContext(make_config(), FakeComputer(fail_on={"type"}))
    ctx.decisions = [SafetyDecision(False, stop_reason="safety_check_rejected", reason="no")]

    async def flag_the_last_click(action: dict[str, Any]) -> list[CheckRequest]:
        # The fourth response's click needs a human, who says no.
        return [CheckRequest("action_requires_ack", "ack")] if action.get("x") == 1 else []

    ctx.policy_checks = flag_the_last_click  # type: ignore[method-assign]
    with pytest.raises(RunHalted):
        await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    (noted,) = ctx.executed
    call_id, action, logged = noted
    assert (call_id, action) == (click["id"], CLICK_JSON)
    # Noted after the intent record and before the result.
    assert logged[-1] == "tool.call" and "tool.result" not in logged


async def test_openai_notes_each_executed_action_of_a_batch(
    openai_fake: oai.FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    click = {"type": "click", "x": 10, "y": 20, "button": "left"}
    call = oai.computer_call(
        actions=[click, {"type": "type", "text": "hi"}, {"type": "keypress", "keys": ["ENTER"]}]
    )
    openai_fake.enqueue(oai.response(call), oai.response(oai.message("done")))
    ctx = MemoryContext(openai_config(), FakeComputer(fail_on={"type"}))

    await OpenAILoop(openai_client).run(ctx, {}, "go", resumed=False)

    (noted,) = ctx.executed  # the failed type and the skipped keypress are not noted
    call_id, action, logged = noted
    assert (call_id, action) == (call["call_id"], CLICK_JSON)
    assert logged[-1] == "tool.call" and "tool.result" not in logged
