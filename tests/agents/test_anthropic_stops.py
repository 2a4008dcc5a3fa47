"""How AnthropicLoop handles each stop_reason, and a request that is too large."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from app.agents import anthropic_transcript as tx
from app.agents.anthropic import AnthropicLoop
from app.agents.anthropic_run import CONTINUE_PROMPT
from app.agents.base import ProviderError, RunOutcome
from app.computers.fake import FakeComputer
from tests.agents.conftest import MemoryContext, bodies, make_config
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)


async def test_pause_turn_calls_again_with_the_same_history(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(text_message("Searching", stop_reason="pause_turn"), text_message("Found it"))
    ctx = MemoryContext(make_config(), FakeComputer())

    outcome = await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    assert outcome == RunOutcome("end_turn", output="Searching\n\nFound it")
    second = fake.requests[1].body["messages"]
    assert second[-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Searching", "citations": None}],
    }


async def test_max_tokens_asks_once_to_continue(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(text_message("Half an", stop_reason="max_tokens"), text_message("answer"))
    ctx = MemoryContext(make_config(), FakeComputer())

    assert (await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)).output == "answer"
    last = fake.requests[1].body["messages"][-1]
    assert last["role"] == "user" and last["content"][0]["text"] == CONTINUE_PROMPT

    fake.reset()
    fake.enqueue(*[text_message("cut", stop_reason="max_tokens")] * 2)
    ctx = MemoryContext(make_config(run_id="run_2"), FakeComputer())
    with pytest.raises(ProviderError, match="max_tokens twice"):
        await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)


async def test_refusal_ends_the_run(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue(
        tool_use_message(computer_call("screenshot"), text="I won't", stop_reason="refusal")
    )
    ctx = MemoryContext(make_config(), FakeComputer())

    outcome = await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)

    assert outcome == RunOutcome("refusal", output="I won't")
    assert tx.unanswered_tool_uses(ctx.state["messages"]) == []  # ready for a follow-up


async def test_context_window_exceeded_fails_the_run(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(text_message("", stop_reason="model_context_window_exceeded"))
    ctx = MemoryContext(make_config(), FakeComputer())
    with pytest.raises(ProviderError) as caught:
        await AnthropicLoop(client).run(ctx, {}, "go", resumed=False)
    assert caught.value.type == "context_window_exceeded"


async def test_request_too_large_retries_with_the_newest_image_only(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(
        tool_use_message(computer_call("screenshot")),
        tool_use_message(computer_call("screenshot")),
        text_message("ok"),
    )
    ctx = MemoryContext(make_config(), FakeComputer())
    loop = AnthropicLoop(client)
    original = ctx.call_provider
    calls = 0

    async def inject_413(call: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            fake.fail_next(413)
        return await original(call)

    ctx.call_provider = inject_413  # type: ignore[method-assign]
    assert (await loop.run(ctx, {}, "go", resumed=False)).output == "ok"
    images = [tx.count_images(body["messages"]) for body in bodies(fake)]
    assert images == [1, 2, 3, 1]
