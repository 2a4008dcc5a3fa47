"""Structured output across a restart, for both loops (the strict fakes, the real SDKs).

A run whose first answer did not validate checkpoints the repair turn (the
validation errors as the next user turn, and `output_repairs`) before it calls
the model again. A process that dies after that checkpoint is resumed from it:
the repair is sent once, never twice, and a second invalid answer fails the run
at once. One that resumes from the reply's own checkpoint (the repair not yet
recorded) asks for the repair exactly once.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from app.agents.anthropic import AnthropicLoop
from app.agents.base import ProviderError, RunOutcome
from app.agents.openai import OpenAILoop
from app.agents.structured import OUTPUT_INVALID
from app.computers.fake import FakeComputer
from tests.agents.conftest import MemoryContext, bodies, make_config, openai_bodies, openai_config
from tests.fakes.anthropic_server import FakeAnthropic, text_message
from tests.fakes.openai_server import FakeOpenAI, message, response

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
REPAIR_HEAD = "Your final answer is not valid against the required JSON Schema:"


def anthropic_last_user_text(body: dict[str, Any]) -> str:
    last = body["messages"][-1]
    assert last["role"] == "user"
    return "\n".join(b["text"] for b in last["content"] if b["type"] == "text")


def openai_last_user_text(body: dict[str, Any]) -> str:
    last = body["input"][-1]
    assert last["type"] == "message" and last["role"] == "user"
    return "\n".join(p["text"] for p in last["content"] if p["type"] == "input_text")


async def _anthropic_dies_after_the_repair_checkpoint(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> MemoryContext:
    # The repair's model call finds no scripted reply: the strict fake answers 500 and
    # the "process" stops there, its repair checkpoint committed.
    fake.enqueue(text_message('{"n": "one"}'))
    ctx = MemoryContext(make_config(output_schema=SCHEMA), FakeComputer())
    with pytest.raises(ProviderError):
        await AnthropicLoop(client).run(ctx, {}, "Count", resumed=False)
    assert ctx.state["output_repairs"] == 1
    assert REPAIR_HEAD in anthropic_last_user_text(bodies(fake)[-1])
    fake.reset()
    return ctx


async def test_anthropic_resumed_after_the_repair_was_asked_does_not_ask_again(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    dead = await _anthropic_dies_after_the_repair_checkpoint(fake, client)

    fake.enqueue(text_message('{"n": 1}'))
    ctx = MemoryContext(make_config(output_schema=SCHEMA), FakeComputer(), shots=dead.shots)
    outcome = await AnthropicLoop(client).run(ctx, dead.state, "Count", resumed=True)

    assert outcome == RunOutcome("end_turn", output='{"n": 1}', output_json={"n": 1})
    (body,) = bodies(fake)  # the repair turn, sent again because its reply was lost
    assert REPAIR_HEAD in anthropic_last_user_text(body)
    assert json.dumps(SCHEMA) in body["system"][0]["text"]


async def test_anthropic_resumed_after_the_repair_fails_on_a_second_invalid_answer(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    dead = await _anthropic_dies_after_the_repair_checkpoint(fake, client)

    fake.enqueue(text_message("one"))
    ctx = MemoryContext(make_config(output_schema=SCHEMA), FakeComputer(), shots=dead.shots)
    with pytest.raises(ProviderError) as raised:
        await AnthropicLoop(client).run(ctx, dead.state, "Count", resumed=True)

    assert raised.value.type == OUTPUT_INVALID
    assert len(fake.requests) == 1  # no second repair
    assert ctx.state["failed"]["type"] == OUTPUT_INVALID
    # The marker is durable: resumed once more, the run fails the same way, no call.
    again = MemoryContext(make_config(output_schema=SCHEMA), FakeComputer(), shots=dead.shots)
    with pytest.raises(ProviderError):
        await AnthropicLoop(client).run(again, ctx.state, "Count", resumed=True)
    assert len(fake.requests) == 1


async def test_anthropic_resumed_from_the_invalid_reply_asks_for_the_repair_once(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    dead = await _anthropic_dies_after_the_repair_checkpoint(fake, client)
    # The checkpoint before the repair's: the invalid reply recorded, the repair not yet.
    before = dead.states[-2]
    assert before["output_repairs"] == 0 and before["messages"][-1]["role"] == "assistant"

    fake.enqueue(text_message('{"n": 2}'))
    ctx = MemoryContext(make_config(output_schema=SCHEMA), FakeComputer(), shots=dead.shots)
    outcome = await AnthropicLoop(client).run(ctx, before, "Count", resumed=True)

    assert outcome.output_json == {"n": 2}
    (body,) = bodies(fake)
    assert anthropic_last_user_text(body).count(REPAIR_HEAD) == 1


async def test_openai_resumed_after_the_repair_was_asked_does_not_ask_again(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    openai_fake.enqueue(response(message("n = 1")))
    dead = MemoryContext(openai_config(output_schema=SCHEMA), FakeComputer())
    with pytest.raises(ProviderError):
        await OpenAILoop(openai_client).run(dead, {}, "Count", resumed=False)
    assert dead.state["output_repairs"] == 1
    assert "the answer is not JSON" in openai_last_user_text(openai_bodies(openai_fake)[-1])
    # Not reset: the fake keeps the stored responses the resumed run chains on.
    sent = len(openai_fake.requests)

    openai_fake.enqueue(response(message('{"n": "x"}')))
    ctx = MemoryContext(openai_config(output_schema=SCHEMA), FakeComputer(), shots=dead.shots)
    with pytest.raises(ProviderError) as raised:
        await OpenAILoop(openai_client).run(ctx, dead.state, "Count", resumed=True)

    assert raised.value.type == OUTPUT_INVALID
    assert "at /n: 'x' is not of type 'integer'" in str(raised.value)
    (body,) = openai_bodies(openai_fake)[sent:]  # the repair turn once, then the failure
    assert REPAIR_HEAD in openai_last_user_text(body)
    assert json.dumps(SCHEMA) in body["instructions"]


async def test_openai_resumed_from_the_invalid_reply_asks_for_the_repair_once(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    openai_fake.enqueue(response(message("[]")))
    dead = MemoryContext(openai_config(output_schema=SCHEMA), FakeComputer())
    with pytest.raises(ProviderError):
        await OpenAILoop(openai_client).run(dead, {}, "Count", resumed=False)
    before = dead.states[-2]
    assert before["output_repairs"] == 0
    sent = len(openai_fake.requests)

    openai_fake.enqueue(response(message('{"n": 3}')))
    ctx = MemoryContext(openai_config(output_schema=SCHEMA), FakeComputer(), shots=dead.shots)
    outcome = await OpenAILoop(openai_client).run(ctx, before, "Count", resumed=True)

    assert outcome.output_json == {"n": 3}
    (body,) = openai_bodies(openai_fake)[sent:]
    assert openai_last_user_text(body).count(REPAIR_HEAD) == 1
