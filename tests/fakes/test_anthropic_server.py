"""The fake Anthropic server, exercised through the real `anthropic` SDK client.

Every rejection is checked as the SDK surfaces it (BadRequestError and friends),
so these tests also pin the wire behaviour the agent loop relies on.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, TextBlock, ToolUseBlock
from anthropic.types.beta import BetaMessage, BetaTextBlock, BetaThinkingBlock, BetaToolUseBlock
from PIL import Image

from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    ScriptedError,
    computer_call,
    redacted_thinking_block,
    text_message,
    tool_use_message,
    toolset_call,
)

MODEL = "claude-sonnet-4-6"
BETA = "computer-use-2025-11-24"
COMPUTER_TOOL = {
    "type": "computer_20251124",
    "name": "computer",
    "display_width_px": 1280,
    "display_height_px": 800,
}
TOOLSET_TOOL = {"type": "computer_toolset_20260801"}
HI: list[Any] = [{"role": "user", "content": "hi"}]
THINK = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeAnthropic]:
    # One server for the module keeps the file fast; each test starts from a clean state.
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeAnthropic) -> FakeAnthropic:
    shared_fake.reset()  # strict and the other settings too
    return shared_fake


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="test", max_retries=0, timeout=10
    ) as client:
        yield client


# ------------------------------------------------------------------------- helpers


async def ga_create(
    client: anthropic.AsyncAnthropic, messages: list[Any], **kwargs: Any
) -> Message:
    """client.messages.create with plain-dict params (its signature wants TypedDicts)."""
    params: dict[str, Any] = {"max_tokens": 10, **kwargs}
    return await client.messages.create(model=MODEL, messages=messages, **params)


async def beta_create(
    client: anthropic.AsyncAnthropic, messages: list[Any], **kwargs: Any
) -> BetaMessage:
    """client.beta.messages.create, with the 20251124 computer tool and its beta by default."""
    params: dict[str, Any] = {"max_tokens": 4096, "tools": [COMPUTER_TOOL], "betas": [BETA]}
    return await client.beta.messages.create(model=MODEL, messages=messages, **{**params, **kwargs})


async def raw_create(client: anthropic.AsyncAnthropic, body: dict[str, Any]) -> object:
    """POST a body the typed methods refuse to build, through the SDK's own transport."""
    return await client.post("/v1/messages", cast_to=object, body=body)


async def expect_400(call: Awaitable[object], fragment: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await call
    assert caught.value.type == "invalid_request_error"
    assert fragment in (caught.value.api_message or ""), caught.value.api_message


def first_text(message: Message | BetaMessage) -> str:
    block = message.content[0]
    assert isinstance(block, TextBlock | BetaTextBlock)
    return block.text


def png(width: int = 4, height: int = 4, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def image(data: str | None = None, media_type: str = "image/png") -> dict[str, Any]:
    source = {"type": "base64", "media_type": media_type, "data": data or png()}
    return {"type": "image", "source": source}


def tool_result(call: dict[str, Any], *content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": call["id"],
        "content": list(content) or "ok",
        **extra,
    }


async def first_turn(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, reply: dict[str, Any]
) -> list[Any]:
    """Serve `reply` to a first request; return the history up to and including it."""
    fake.enqueue(reply)
    go = {"role": "user", "content": "go"}
    message = await beta_create(client, [go], thinking=THINK)
    return [
        go,
        {
            "role": "assistant",
            "content": [b.model_dump(exclude_none=True) for b in message.content],
        },
    ]


# ----------------------------------------------------------------------- lifecycle


async def test_starts_serves_and_stops_cleanly() -> None:
    fake = FakeAnthropic().start()
    port = int(fake.base_url.rsplit(":", 1)[1])
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="k", max_retries=0
    ) as client:
        assert first_text(await ga_create(client, HI)) == "Done."
    fake.stop()
    # Stopped: the port refuses connections.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


async def test_shutdown_is_not_held_up_by_a_30s_delay() -> None:
    fake = FakeAnthropic().start()
    fake.delay_next(30)
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="k", max_retries=0
    ) as client:
        call = asyncio.create_task(ga_create(client, HI))
        await fake.wait_for_requests(1)
        await asyncio.to_thread(fake.stop)
        # Answered at the stop, not after the delay: 503 "shutting down", not the 200.
        with pytest.raises(anthropic.ServiceUnavailableError):
            await call
    port = int(fake.base_url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


# ------------------------------------------------------------------------ the wire


async def test_ga_and_beta_calls_share_one_path_and_differ_by_header(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    ga = await ga_create(client, HI)
    beta = await beta_create(client, HI)
    assert isinstance(ga, Message) and isinstance(beta, BetaMessage)
    (path_ga, headers_ga, _), (path_beta, headers_beta, body_beta) = fake.requests
    assert path_ga == path_beta == "/v1/messages"  # no ?beta=true in this SDK
    assert "anthropic-beta" not in headers_ga
    assert headers_beta["anthropic-beta"] == BETA and fake.last_request.betas == {BETA}
    assert headers_ga["authorization"] == "Bearer test"  # api_key travels as a Bearer token
    assert "x-api-key" not in headers_ga
    assert headers_ga["anthropic-version"]
    assert body_beta["tools"] == [COMPUTER_TOOL]
    assert ga.usage.input_tokens > 0 and ga.usage.output_tokens > 0


async def test_missing_or_wrong_key_is_401(fake: FakeAnthropic) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        response = await http.post(
            "/v1/messages", json={}, headers={"anthropic-version": "2023-06-01"}
        )
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    with FakeAnthropic(api_key="right") as locked:
        async with anthropic.AsyncAnthropic(
            base_url=locked.base_url, api_key="wrong", max_retries=0
        ) as client:
            with pytest.raises(anthropic.AuthenticationError):
                await ga_create(client, HI)


async def test_x_api_key_works_and_anthropic_version_is_required(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": HI}
    versioned = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        missing = await http.post("/v1/messages", json=body, headers={"x-api-key": "k"})
        ok = await http.post("/v1/messages", json=body, headers=versioned)
        unknown = await http.post("/v1/complete", json=body, headers=versioned)
    assert missing.status_code == 400
    assert "anthropic-version" in missing.json()["error"]["message"]
    assert ok.status_code == 200 and ok.json()["type"] == "message"
    assert ok.headers["request-id"].startswith("req_")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"


# ----------------------------------------------------------------------- scripting


async def test_enqueued_replies_are_served_in_order_with_ids_filled(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    click = computer_call("left_click", coordinate=[10, 20])
    screenshot = {"type": "tool_use", "name": "computer", "input": {"action": "screenshot"}}
    fake.enqueue(tool_use_message(click, text="Clicking"), {"content": [screenshot]})
    first = await beta_create(client, [{"role": "user", "content": "go"}])
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert isinstance(call, BetaToolUseBlock)
    assert call.id == click["id"] and click["id"].startswith("toolu_")
    assert call.input == {"action": "left_click", "coordinate": [10, 20]}
    history = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [tool_result(click)]},
    ]
    second = await beta_create(client, history)
    assert isinstance(second.content[0], BetaToolUseBlock)
    assert second.content[0].id.startswith("toolu_")
    assert fake.pending == 0


async def test_empty_queue_answers_end_turn_or_500_when_strict(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    message = await ga_create(client, HI)
    assert message.stop_reason == "end_turn" and first_text(message) == "Done."
    fake.strict = True
    with pytest.raises(anthropic.InternalServerError) as caught:
        await ga_create(client, HI)
    assert "no scripted response" in (caught.value.api_message or "")
    assert fake.script_errors


async def test_reset_puts_back_the_settings_a_test_changed(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    # A shared server outlives its tests: what one sets must not leak into the next.
    fake.strict, fake.default_text, fake.max_request_bytes = True, "changed", 10
    fake.api_key = "another-key"
    with pytest.raises(anthropic.AuthenticationError):
        await ga_create(client, HI)
    fake.reset()
    assert (fake.strict, fake.api_key, fake.default_text) == (False, None, "Done.")
    assert first_text(await ga_create(client, HI)) == "Done."  # not strict, any key, any size
    assert fake.script_errors == [] and len(fake.requests) == 1


async def test_callable_replies_see_the_request(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    def echo(request: RecordedRequest) -> dict[str, Any]:
        return text_message(f"you said {request.body['messages'][-1]['content']}")

    async def refuse(request: RecordedRequest) -> ScriptedError:
        return ScriptedError(400, "nope")

    def broken(request: RecordedRequest) -> dict[str, Any]:
        raise AssertionError("the loop sent the wrong thing")

    fake.enqueue(echo, refuse, broken)
    assert (
        first_text(await ga_create(client, [{"role": "user", "content": "ping"}]))
        == "you said ping"
    )
    await expect_400(ga_create(client, HI), "nope")
    with pytest.raises(anthropic.InternalServerError) as caught:
        await ga_create(client, HI)
    assert "AssertionError: the loop sent the wrong thing" in (caught.value.api_message or "")
    assert fake.script_errors == ["AssertionError: the loop sent the wrong thing"]


async def test_ga_toolset_round_trip(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    click = toolset_call("left_click", coordinate=[5, 6])
    fake.enqueue(tool_use_message(click))
    go = {"role": "user", "content": "go"}
    first = await ga_create(client, [go], max_tokens=100, tools=[TOOLSET_TOOL])
    block = first.content[0]
    assert isinstance(block, ToolUseBlock)
    assert block.name == "left_click" and block.toolset_name == "computer"
    assert block.input == {"coordinate": [5, 6]}
    history = [go, {"role": "assistant", "content": first.content}]
    answered = {"role": "user", "content": [tool_result(click, toolset_name="computer")]}
    await ga_create(client, [*history, answered], tools=[TOOLSET_TOOL])
    bare = {"role": "user", "content": [tool_result(click)]}
    await expect_400(
        ga_create(client, [*history, bare], tools=[TOOLSET_TOOL]),
        "must carry toolset_name 'computer'",
    )


async def test_a_script_for_the_wrong_tool_version_fails_loudly(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(tool_use_message(toolset_call("screenshot")))
    with pytest.raises(anthropic.InternalServerError):
        await beta_create(client, [{"role": "user", "content": "go"}])
    assert "'screenshot' is not offered" in fake.script_errors[0]


async def test_stream_true_renders_the_same_message(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    call = computer_call("screenshot")
    fake.enqueue(tool_use_message(call, text="Looking", thinking="hmm"))
    params: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 4096,
        "thinking": THINK,
        "messages": [{"role": "user", "content": "go"}],
        "tools": [COMPUTER_TOOL],
        "betas": [BETA],
    }
    async with client.beta.messages.stream(**params) as stream:
        message = await stream.get_final_message()
    thinking, _, tool = message.content
    assert isinstance(thinking, BetaThinkingBlock) and isinstance(tool, BetaToolUseBlock)
    assert thinking.thinking == "hmm" and thinking.signature
    assert tool.input == {"action": "screenshot"} and tool.id == call["id"]
    assert message.stop_reason == "tool_use" and message.usage.output_tokens > 1


# ----------------------------------------------------------------- fault injection


async def test_429_with_retry_after_does_not_consume_the_script(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(text_message("after the storm"))
    fake.fail_next(429, retry_after=2)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await ga_create(client, HI)
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.type == "rate_limit_error"
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "error"
    assert first_text(await ga_create(client, HI)) == "after the storm"


async def test_529_and_500(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.fail_next(529, times=2)
    fake.fail_next(500)
    for _ in range(2):
        with pytest.raises(anthropic.APIStatusError) as caught:
            await ga_create(client, HI)
        assert caught.value.status_code == 529 and caught.value.type == "overloaded_error"
        # OverloadedError subclasses InternalServerError: catching that catches 529 too.
        assert isinstance(caught.value, anthropic.OverloadedError | anthropic.InternalServerError)
    with pytest.raises(anthropic.InternalServerError) as caught_500:
        await ga_create(client, HI)
    assert caught_500.value.status_code == 500 and caught_500.value.type == "api_error"


async def test_malformed_replies(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    # Pins the SDK behaviour the loop must handle: a body that is not JSON escapes as a bare
    # ValueError (no APIError at all), and JSON of the wrong shape is not validated.
    fake.fail_next(200, body="{not json")
    with pytest.raises(json.JSONDecodeError):
        await ga_create(client, HI)
    fake.fail_next(200, body={"unexpected": True})
    message = await ga_create(client, HI)
    assert message.content is None and message.stop_reason is None  # type: ignore[comparison-overlap]


async def test_delay_ends_when_the_client_gives_up(fake: FakeAnthropic) -> None:
    fake.delay_next(30)
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="k", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(anthropic.APITimeoutError):
            await ga_create(client, HI)
    await fake.wait_for_disconnects(1)  # the server saw the client leave and stopped waiting


async def test_cancelling_the_call_disconnects(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(text_message("too late"), delay=30)
    call = asyncio.create_task(ga_create(client, HI))
    await fake.wait_for_requests(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await fake.wait_for_disconnects(1)
    assert fake.disconnects == 1


async def test_per_response_delay(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue(text_message("slow"), delay=0.2)
    started = time.perf_counter()
    message = await ga_create(client, HI)
    assert time.perf_counter() - started >= 0.2
    assert first_text(message) == "slow"


async def test_concurrent_requests_are_all_recorded(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    await asyncio.gather(
        *(ga_create(client, [{"role": "user", "content": f"n{i}"}]) for i in range(20))
    )
    seen = sorted(body["messages"][0]["content"] for _, _, body in fake.requests)
    assert seen == sorted(f"n{i}" for i in range(20))


# --------------------------------------------------------------------- validation


async def test_required_fields(client: anthropic.AsyncAnthropic) -> None:
    await expect_400(
        raw_create(client, {"max_tokens": 10, "messages": HI}), "model: Field required"
    )
    await expect_400(
        raw_create(client, {"model": MODEL, "messages": HI}), "max_tokens: Field required"
    )
    await expect_400(
        raw_create(client, {"model": MODEL, "max_tokens": 10}), "messages: Field required"
    )
    typo = {"model": MODEL, "max_tokens": 10, "messages": HI, "temprature": 1}
    await expect_400(raw_create(client, typo), "temprature: Extra inputs are not permitted")


async def test_message_roles(client: anthropic.AsyncAnthropic) -> None:
    await expect_400(ga_create(client, []), "at least one message is required")
    await expect_400(
        ga_create(client, [{"role": "assistant", "content": "hi"}]),
        'first message must use the "user" role',
    )
    await expect_400(ga_create(client, [{"role": "user", "content": []}]), "non-empty content")
    empty_text = [{"role": "user", "content": [{"type": "text", "text": ""}]}]
    await expect_400(ga_create(client, empty_text), "text content blocks must be non-empty")
    # Consecutive user turns are merged, as the API does; a trailing assistant message is a prefill.
    merged = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    await ga_create(client, merged)


async def test_every_tool_use_needs_a_result_in_the_next_message(
    client: anthropic.AsyncAnthropic,
) -> None:
    call = computer_call("screenshot")
    go = {"role": "user", "content": "go"}
    asked = {"role": "assistant", "content": [call]}
    await expect_400(
        beta_create(client, [go, asked, {"role": "user", "content": "no results"}]),
        f"`tool_use` ids were found without `tool_result` blocks immediately after: {call['id']}",
    )
    late = [go, asked, {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    await expect_400(
        beta_create(client, [*late, {"role": "user", "content": [tool_result(call)]}]),
        "without `tool_result` blocks immediately after",
    )
    stranger = {"type": "tool_result", "tool_use_id": "toolu_stranger", "content": "ok"}
    await expect_400(
        beta_create(
            client, [go, asked, {"role": "user", "content": [tool_result(call), stranger]}]
        ),
        "unexpected `tool_use_id` found in `tool_result` blocks: toolu_stranger",
    )
    text_first = [{"type": "text", "text": "note"}, tool_result(call)]
    await expect_400(
        beta_create(client, [go, asked, {"role": "user", "content": text_first}]),
        "tool_result blocks must come first",
    )
    answered = {"role": "user", "content": [tool_result(call)]}
    await expect_400(ga_create(client, [go, asked, answered]), "must define tools")
    # Results, then a note in a second user message that the API merges into the same turn: fine.
    await beta_create(client, [go, asked, answered, {"role": "user", "content": "note"}])


async def test_at_most_four_cache_breakpoints(client: anthropic.AsyncAnthropic) -> None:
    eph = {"type": "ephemeral"}
    system = [{"type": "text", "text": "sys", "cache_control": eph}]
    tools = [{**COMPUTER_TOOL, "cache_control": eph}]
    blocks = [{"type": "text", "text": f"t{i}", "cache_control": eph} for i in range(3)]
    await expect_400(
        beta_create(client, [{"role": "user", "content": blocks}], system=system, tools=tools),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    )
    await beta_create(client, [{"role": "user", "content": blocks[:2]}], system=system, tools=tools)


async def test_prompt_cache_reads_an_unchanged_prefix(client: anthropic.AsyncAnthropic) -> None:
    eph = {"type": "ephemeral"}
    system = [{"type": "text", "text": "a long system prompt " * 50, "cache_control": eph}]

    def ask(text: str) -> list[Any]:
        return [{"role": "user", "content": [{"type": "text", "text": text, "cache_control": eph}]}]

    first = await beta_create(client, ask("hi " * 100), system=system)
    second = await beta_create(client, ask("hi " * 100), system=system)
    third = await beta_create(client, ask("bye " * 100), system=system)
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    # Only the system prompt (and tools) before the edited message is still a cache hit.
    assert 0 < (third.usage.cache_read_input_tokens or 0) < second.usage.cache_read_input_tokens


async def test_thinking_blocks_must_come_back_unchanged(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    call = computer_call("screenshot")
    go, asked = await first_turn(
        fake, client, tool_use_message(call, thinking=["plan", redacted_thinking_block()])
    )
    answer = {"role": "user", "content": [tool_result(call)]}
    await beta_create(client, [go, asked, answer], thinking=THINK)

    def altered(index: int, **change: str) -> dict[str, Any]:
        content = [dict(b) for b in asked["content"]]
        content[index].update(change)
        return {"role": "assistant", "content": content}

    cases = [
        (altered(0, thinking="plan, edited"), "Invalid signature in thinking block"),
        (altered(0, signature="made-up"), "Invalid signature in thinking block"),
        (altered(1, data="tampered"), "Invalid data in redacted_thinking block"),
    ]
    for assistant, error in cases:
        await expect_400(beta_create(client, [go, assistant, answer], thinking=THINK), error)
    dropped = {
        "role": "assistant",
        "content": [b for b in asked["content"] if b["type"] == "tool_use"],
    }
    await expect_400(
        beta_create(client, [go, dropped, answer], thinking=THINK),
        "must start with a thinking block",
    )


async def test_thinking_config(client: anthropic.AsyncAnthropic) -> None:
    await expect_400(
        ga_create(client, HI, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 1023}),
        "greater than or equal to 1024",
    )
    await expect_400(
        ga_create(client, HI, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}),
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    )
    await expect_400(ga_create(client, HI, thinking={"type": "sometimes"}), "thinking.type")
    await ga_create(
        client, HI, max_tokens=2048, thinking={"type": "adaptive", "display": "summarized"}
    )
    await ga_create(client, HI, max_tokens=2048, thinking=THINK)


async def test_beta_computer_tools(client: anthropic.AsyncAnthropic) -> None:
    await expect_400(
        beta_create(client, HI, betas=anthropic.omit),
        "requires the 'anthropic-beta: computer-use-2025-11-24' header",
    )
    old = {**COMPUTER_TOOL, "type": "computer_20250124"}
    await expect_400(beta_create(client, HI, tools=[old]), "computer-use-2025-01-24")
    await expect_400(
        beta_create(
            client, HI, tools=[{**old, "enable_zoom": True}], betas=["computer-use-2025-01-24"]
        ),
        "enable_zoom: Extra inputs are not permitted",
    )
    await expect_400(
        beta_create(client, HI, tools=[{**COMPUTER_TOOL, "name": "mouse"}]),
        "name: Input should be 'computer'",
    )
    no_height = {k: v for k, v in COMPUTER_TOOL.items() if k != "display_height_px"}
    await expect_400(
        beta_create(client, HI, tools=[no_height]), "display_height_px: Field required"
    )
    await beta_create(client, HI, tools=[{**COMPUTER_TOOL, "enable_zoom": True}])
    legacy = {**COMPUTER_TOOL, "type": "computer_20241022"}
    await beta_create(client, HI, tools=[legacy], betas=["computer-use-2024-10-22"])


async def test_ga_toolset_shape(client: anthropic.AsyncAnthropic) -> None:
    def toolset(**fields: Any) -> list[Any]:
        return [{**TOOLSET_TOOL, **fields}]

    await expect_400(
        ga_create(client, HI, tools=toolset(name="computer")), "tools.0.name: Extra inputs"
    )
    await expect_400(
        ga_create(client, HI, tools=toolset(display_width_px=1280)),
        "display_width_px: Extra inputs",
    )
    await expect_400(
        ga_create(client, HI, tools=toolset(configs={"fly": {"enabled": True}})),
        "configs.fly: Extra inputs",
    )
    await expect_400(
        beta_create(client, HI, tools=[TOOLSET_TOOL, COMPUTER_TOOL]), "may not be combined"
    )
    await ga_create(client, HI, tools=toolset(configs={"zoom": {"enabled": False}, "key": None}))


async def test_tool_result_images(client: anthropic.AsyncAnthropic) -> None:
    call = computer_call("screenshot")
    asked = [{"role": "user", "content": "go"}, {"role": "assistant", "content": [call]}]

    def with_images(*images: dict[str, Any]) -> list[Any]:
        return [*asked, {"role": "user", "content": [tool_result(call, *images)]}]

    await beta_create(client, with_images(image(), image(png(fmt="JPEG"), "image/jpeg")))
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    cases = [
        ([url], "only 'base64' image sources"),
        ([image(media_type="image/bmp")], "source.media_type"),
        ([image("not base64!")], "invalid base64 data"),
        ([image(base64.b64encode(b"text").decode())], "Could not process image"),
        ([image(png(fmt="JPEG"))], "does not match the provided media type image/png"),
        ([image(png(8001, 1))], "exceed max allowed size: 8000 pixels"),
        ([image()] * 101, "Too many images"),
        ([image()] * 20 + [image(png(2001, 1))], "many-image requests: 2000 pixels"),
    ]
    for images, error in cases:
        await expect_400(beta_create(client, with_images(*images)), error)
    await beta_create(client, with_images(*[image()] * 20, image(png(2000, 1))))


async def test_request_over_32_mb_is_413(client: anthropic.AsyncAnthropic) -> None:
    huge = "x" * (32 * 1024 * 1024)
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        await ga_create(client, [{"role": "user", "content": huge}])
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "request_too_large"
