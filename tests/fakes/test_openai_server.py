"""The fake OpenAI Responses server, exercised through the real `openai` SDK client.

Every rejection is checked as the SDK surfaces it (BadRequestError, NotFoundError...),
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

import httpx
import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseComputerToolCall,
    ResponseOutputMessage,
    ResponseReasoningItem,
)
from PIL import Image

from tests.fakes.openai_server import (
    FakeOpenAI,
    RecordedRequest,
    ScriptedError,
    computer_call,
    message,
    reasoning,
    response,
    safety_check,
)

MODEL = "gpt-5.4"
GA_TOOL = {"type": "computer"}
PREVIEW_TOOL = {
    "type": "computer_use_preview",
    "display_width": 1280,
    "display_height": 800,
    "environment": "browser",
}
CLICK = {"type": "click", "x": 10, "y": 20, "button": "left"}
GO = {"role": "user", "content": "go"}


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeOpenAI]:
    # One server for the module keeps the file fast; each test starts from a clean state.
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeOpenAI) -> FakeOpenAI:
    shared_fake.reset()  # strict and the other settings too
    return shared_fake


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key="test", max_retries=0, timeout=10
    ) as client:
        yield client


# ------------------------------------------------------------------------- helpers


async def create(client: openai.AsyncOpenAI, input: Any = "go", **kwargs: Any) -> Response:
    """client.responses.create with plain-dict params and the GA computer tool by default."""
    params: dict[str, Any] = {"model": MODEL, "input": input, "tools": [GA_TOOL], **kwargs}
    return await client.responses.create(**params)


async def preview_create(client: openai.AsyncOpenAI, input: Any = "go", **kwargs: Any) -> Response:
    params: dict[str, Any] = {
        "model": "computer-use-preview",
        "tools": [PREVIEW_TOOL],
        "truncation": "auto",
        **kwargs,
    }
    return await create(client, input, **params)


async def raw_create(client: openai.AsyncOpenAI, body: dict[str, Any]) -> object:
    """POST a body the typed method would not build, through the SDK's own transport."""
    return await client.post("/responses", cast_to=object, body=body)


async def expect_error(
    call: Awaitable[object],
    fragment: str,
    error: type[openai.APIStatusError] = openai.BadRequestError,
    param: str | None = None,
) -> openai.APIStatusError:
    with pytest.raises(error) as caught:
        await call
    body = caught.value.body
    assert isinstance(body, dict), body
    assert set(body) == {"message", "type", "param", "code"}, body
    assert body["type"] == "invalid_request_error", body
    assert fragment in body["message"], body["message"]
    if param is not None:
        assert caught.value.param == param
    return caught.value


def png(width: int = 4, height: int = 4, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def screenshot(data_url: str | None = None) -> dict[str, Any]:
    return {
        "type": "computer_screenshot",
        "image_url": data_url or f"data:image/png;base64,{png()}",
    }


def call_output(call: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "computer_call_output",
        "call_id": call["call_id"],
        "output": screenshot(),
        **extra,
    }


def dumped(result: Response) -> list[dict[str, Any]]:
    """The response's output items as a client resends them."""
    return [item.model_dump(exclude_none=True) for item in result.output]


async def first_turn(
    fake: FakeOpenAI, client: openai.AsyncOpenAI, *items: dict[str, Any], **kwargs: Any
) -> Response:
    fake.enqueue(response(*items))
    return await create(client, **kwargs)


# ------------------------------------------------------------------------ the wire


async def test_sdk_round_trip_and_wire_facts(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    assert fake.base_url.endswith("/v1")
    call = computer_call(actions=[CLICK, {"type": "type", "text": "hi"}])
    fake.enqueue(response(reasoning("Click the box"), call))
    first = await create(client, reasoning={"summary": "auto", "effort": "low"})
    assert isinstance(first, Response) and first.status == "completed"
    assert first.id.startswith("resp_") and first.model == MODEL
    thought, asked = first.output
    assert isinstance(thought, ResponseReasoningItem) and thought.id.startswith("rs_")
    assert thought.summary[0].text == "Click the box"
    assert isinstance(asked, ResponseComputerToolCall) and asked.action is None
    assert asked.id.startswith("cu_") and asked.call_id == call["call_id"]
    assert asked.call_id.startswith("call_") and asked.pending_safety_checks == []
    assert [a.type for a in asked.actions or []] == ["click", "type"]
    assert first._request_id and first._request_id.startswith("req_")
    usage = first.usage
    assert usage is not None and usage.output_tokens_details.reasoning_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0

    fake.enqueue(response(message("All done")))
    second = await create(client, [call_output(call)], previous_response_id=first.id)
    assert second.output_text == "All done"  # the SDK derives it; the API does not send it
    assert isinstance(second.output[0], ResponseOutputMessage)
    assert second.previous_response_id == first.id

    (path, headers, body), _ = fake.requests
    assert path == "/v1/responses"
    assert headers["authorization"] == "Bearer test"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert body == {
        "model": MODEL,
        "input": "go",
        "tools": [GA_TOOL],
        "reasoning": {"summary": "auto", "effort": "low"},
    }
    assert "output_text" not in fake.responses[1]
    # Stored responses can be read back, as with GET /v1/responses/{id}.
    again = await client.responses.retrieve(first.id)
    assert again.id == first.id and again.output[1].type == "computer_call"


async def test_auth_and_unknown_paths(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        # httpx joins these onto base_url, which already ends in /v1.
        anonymous = await http.post("responses", json={"model": MODEL, "input": "x"})
        unknown = await http.post(
            "chat/completions", json={}, headers={"authorization": "Bearer k"}
        )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"
    assert "You didn't provide an API key" in anonymous.json()["error"]["message"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /v1/chat/completions)"
    with FakeOpenAI(api_key="sk-right-key") as locked:
        async with openai.AsyncOpenAI(
            base_url=locked.base_url, api_key="sk-wrong-key", max_retries=0
        ) as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                await create(wrong)
    assert caught.value.code == "invalid_api_key"


async def test_stops_without_waiting_for_held_requests() -> None:
    fake = FakeOpenAI().start()
    port = int(fake.base_url.removesuffix("/v1").rsplit(":", 1)[1])
    fake.delay_next(30)
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as client:
        call = asyncio.create_task(create(client))
        await fake.wait_for_requests(1)
        await asyncio.to_thread(fake.stop)
        # Answered at the stop, not after the delay: 503 "shutting down", not the 200.
        with pytest.raises(openai.InternalServerError) as caught:
            await call
    assert caught.value.status_code == 503
    # Stopped: the port refuses connections.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


# ----------------------------------------------------------------------- scripting


async def test_default_reply_and_strict_mode(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    assert (await create(client)).output_text == "Done."
    fake.strict = True
    with pytest.raises(openai.InternalServerError) as caught:
        await create(client)
    assert "no scripted response" in caught.value.message
    assert fake.script_errors == ["no scripted response left for this request"]


async def test_reset_puts_back_the_settings_a_test_changed(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    # A shared server outlives its tests: what one sets must not leak into the next.
    fake.strict, fake.default_text, fake.max_request_bytes = True, "changed", 10
    fake.api_key = "another-key"
    with pytest.raises(openai.AuthenticationError):
        await create(client)
    fake.reset()
    assert (fake.strict, fake.api_key, fake.default_text) == (False, None, "Done.")
    assert (await create(client)).output_text == "Done."  # not strict, any key, any size
    assert fake.script_errors == [] and len(fake.requests) == 1


async def test_callable_replies_see_the_request(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    def echo(request: RecordedRequest) -> dict[str, Any]:
        return response(message(f"you said {request.body['input']}"))

    async def refuse(request: RecordedRequest) -> ScriptedError:
        return ScriptedError(400, "nope", param="input")

    def broken(request: RecordedRequest) -> dict[str, Any]:
        raise AssertionError("the loop sent the wrong thing")

    fake.enqueue(echo, refuse, broken)
    assert (await create(client, "ping")).output_text == "you said ping"
    await expect_error(create(client), "nope", param="input")
    with pytest.raises(openai.InternalServerError) as caught:
        await create(client)
    assert "AssertionError: the loop sent the wrong thing" in caught.value.message
    assert fake.script_errors == ["AssertionError: the loop sent the wrong thing"]


async def test_scripts_must_fit_the_request(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    # A preview-style `action` under the GA tool (and the reverse) is a broken test script.
    fake.enqueue(response(computer_call(CLICK)), response(computer_call(actions=[CLICK])))
    with pytest.raises(openai.InternalServerError):
        await create(client)
    with pytest.raises(openai.InternalServerError):
        await preview_create(client)
    assert "needs the 'computer_use_preview' tool" in fake.script_errors[0]
    assert "needs the 'computer' tool" in fake.script_errors[1]
    # Serving one built response twice would make two conversations share its items.
    reply = response(message("once"))
    fake.enqueue(reply, reply)
    await create(client)
    with pytest.raises(openai.InternalServerError):
        await create(client)
    assert "already sent" in fake.script_errors[2]
    with pytest.raises(ValueError, match="exactly one of"):
        computer_call(CLICK, actions=[CLICK])


# ----------------------------------------------------------------- fault injection


async def test_429_with_retry_after_does_not_consume_the_script(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake.enqueue(response(message("after the storm")))
    fake.fail_next(429, retry_after=2)
    with pytest.raises(openai.RateLimitError) as caught:
        await create(client)
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.response.headers["retry-after-ms"] == "2000"
    assert caught.value.code == "rate_limit_exceeded"
    assert (await create(client)).output_text == "after the storm"


async def test_500s_and_malformed_bodies(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.fail_next(500, times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            await create(client)
        assert caught.value.status_code == 500 and caught.value.type == "server_error"
    # Pins the SDK behaviour the loop must handle: a 200 whose body is not JSON escapes as a
    # bare ValueError, not an APIError.
    fake.fail_next(200, body="{not json")
    with pytest.raises(json.JSONDecodeError):
        await create(client)
    assert fake.responses == []  # nothing was issued: the next request starts afresh


async def test_delays_end_when_the_client_gives_up(fake: FakeOpenAI) -> None:
    fake.delay_next(30)
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key="k", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await create(client)
    await fake.wait_for_disconnects(1)  # the server saw the client leave and stopped waiting


async def test_per_reply_delay_and_cancelling(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(response(message("slow")), delay=0.2)
    started = time.perf_counter()
    assert (await create(client)).output_text == "slow"
    assert time.perf_counter() - started >= 0.2
    fake.enqueue(response(message("too late")), delay=30)
    call = asyncio.create_task(create(client))
    await fake.wait_for_requests(2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await fake.wait_for_disconnects(1)


async def test_concurrent_requests_are_all_recorded(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    await asyncio.gather(*(create(client, f"n{i}") for i in range(20)))
    assert sorted(body["input"] for _, _, body in fake.requests) == sorted(
        f"n{i}" for i in range(20)
    )
    assert len({r["id"] for r in fake.responses}) == 20


# --------------------------------------------------------------------- validation


async def test_required_and_unknown_fields(client: openai.AsyncOpenAI) -> None:
    missing = await expect_error(
        raw_create(client, {"input": "x"}), "Missing required parameter: 'model'.", param="model"
    )
    assert missing.code == "missing_required_parameter"
    await expect_error(raw_create(client, {"model": MODEL}), "'input'", param="input")
    typo = await expect_error(
        create(client, extra_body={"temprature": 1}), "Unknown parameter: 'temprature'."
    )
    assert typo.code == "unknown_parameter" and typo.param == "temprature"
    await expect_error(create(client, stream=True), "does not implement streaming")
    await expect_error(create(client, input=[{"type": "wish"}]), "Invalid value: 'wish'")


async def test_computer_tools(client: openai.AsyncOpenAI) -> None:
    def without(key: str) -> dict[str, Any]:
        return {k: v for k, v in PREVIEW_TOOL.items() if k != key}

    await preview_create(client)
    await create(client, tools=[GA_TOOL], truncation="auto")
    await create(client, tools=[GA_TOOL])  # truncation is optional for the GA tool
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"tools": [without("display_width")]}, "Missing required", "tools[0].display_width"),
        ({"tools": [without("environment")]}, "Missing required", "tools[0].environment"),
        (
            {"tools": [{**PREVIEW_TOOL, "environment": "amiga"}]},
            "Supported values are: 'browser', 'mac', 'windows', 'linux', 'ubuntu'",
            "tools[0].environment",
        ),
        (
            {"tools": [{**PREVIEW_TOOL, "display_height": "800"}]},
            "expected a positive integer",
            "tools[0].display_height",
        ),
        ({"truncation": "disabled"}, "requires 'truncation' to be set to 'auto'", "truncation"),
        ({"truncation": None}, "requires 'truncation' to be set to 'auto'", "truncation"),
    ]
    for params, fragment, param in cases:
        await expect_error(preview_create(client, **params), fragment, param=param)
    await expect_error(
        create(client, tools=[{"type": "computer", "display_width": 1280}]),
        "Unknown parameter: 'tools[0].display_width'.",
    )
    await expect_error(
        create(client, tools=[{"type": "computer_20251124"}]),
        "Invalid value: 'computer_20251124'",
        param="tools[0].type",
    )
    await expect_error(
        preview_create(client, tools=[PREVIEW_TOOL, GA_TOOL]), "Only one computer tool"
    )
    await create(client, tools=[GA_TOOL, {"type": "function", "name": "f", "parameters": {}}])


async def test_reasoning_include_and_store_settings(client: openai.AsyncOpenAI) -> None:
    for summary in ("auto", "concise", "detailed"):
        await create(client, reasoning={"summary": summary, "effort": "medium"})
    await create(client, include=["reasoning.encrypted_content"], store=False)
    await create(client, store=True, parallel_tool_calls=False, metadata={"k": "v"})
    await expect_error(create(client, reasoning={"summary": "verbose"}), "Invalid value: 'verbose'")
    await expect_error(create(client, reasoning={"effort": "extreme"}), "'extreme'")
    await expect_error(
        create(client, reasoning={"budget": 1}), "Unknown parameter: 'reasoning.budget'."
    )
    await expect_error(
        create(client, include=["reasoning.everything"]),
        "Supported values are: 'file_search_call.results'",
        param="include[0]",
    )
    await expect_error(create(client, store="yes"), "expected a boolean", param="store")


async def test_screenshot_outputs(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    call = computer_call(actions=[{"type": "screenshot"}])
    first = await first_turn(fake, client, call)

    async def answer(output: dict[str, Any]) -> Response:
        item = {"type": "computer_call_output", "call_id": call["call_id"], "output": output}
        return await create(client, [item], previous_response_id=first.id)

    jpeg = f"data:image/jpeg;base64,{png(fmt='JPEG')}"
    await answer(screenshot(jpeg))
    here = "input[0].output"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"type": "input_image", "image_url": jpeg}, "Supported values", f"{here}.type"),
        (screenshot("https://example.com/a.png"), "base64-encoded data URL", f"{here}.image_url"),
        (
            screenshot("data:image/png;base64,not base64!"),
            "could not be decoded",
            f"{here}.image_url",
        ),
        (
            screenshot(f"data:image/png;base64,{base64.b64encode(b'text').decode()}"),
            "could not be decoded",
            f"{here}.image_url",
        ),
        (
            screenshot(f"data:image/png;base64,{png(fmt='JPEG')}"),
            "is JPEG, not the declared image/png",
            f"{here}.image_url",
        ),
        (
            screenshot(f"data:image/bmp;base64,{png(fmt='BMP')}"),
            "unsupported image media type",
            f"{here}.image_url",
        ),
        ({**screenshot(), "current_url": "https://x"}, "Unknown parameter", f"{here}.current_url"),
        ({"type": "computer_screenshot", "file_id": "file_1"}, "data URL", f"{here}.image_url"),
    ]
    for output, fragment, param in cases:
        await expect_error(answer(output), fragment, param=param)


# -------------------------------------------------------------- conversation state


async def test_previous_response_id_must_be_stored(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    # The API answers 400 here, not 404: the code tells it apart from other bad requests.
    missing = await expect_error(
        create(client, previous_response_id="resp_nope"),
        "Previous response with id 'resp_nope' not found.",
        param="previous_response_id",
    )
    assert missing.code == "previous_response_not_found"
    unstored = await create(client, store=False)
    gone = await expect_error(create(client, previous_response_id=unstored.id), "not found")
    assert gone.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)


async def test_outputs_must_answer_a_pending_call(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK])
    first = await first_turn(fake, client, call)
    stranger = {**call_output(call), "call_id": "call_stranger"}
    await expect_error(
        create(client, [stranger], previous_response_id=first.id),
        "No tool call found for function call output with call_id call_stranger.",
        param="input",
    )
    # Unchained, the output needs its call earlier in the same input.
    await expect_error(
        create(client, [call_output(call)]), "No tool call found for function call output"
    )
    await expect_error(
        create(client, [call_output(call), call_output(call)], previous_response_id=first.id),
        "No tool call found",
    )
    await create(client, [call_output(call)], previous_response_id=first.id)
    # The same answer again, chained on a response that already has it: nothing is pending.
    later = fake.responses[-1]["id"]
    await expect_error(
        create(client, [call_output(call)], previous_response_id=later), "No tool call found"
    )
    # The full history resent without chaining is fine too.
    await create(client, [GO, *dumped(first), call_output(call)])


async def test_an_unanswered_call_blocks_chaining_on_its_response(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    one = computer_call(actions=[CLICK])
    first = await first_turn(fake, client, reasoning("step 1"), one)
    two = computer_call(actions=[CLICK], pending_safety_checks=[safety_check()])
    fake.enqueue(response(reasoning("step 2"), two))
    second = await create(client, [call_output(one)], previous_response_id=first.id)
    # A human rejected `two`: it is never answered, so a follow-up may not chain on `second`...
    follow_up = {"role": "user", "content": "Do something else"}
    await expect_error(
        create(client, [follow_up], previous_response_id=second.id),
        f"No tool output found for computer call {two['call_id']}.",
        param="input",
    )
    # ...but it may branch from the response before, resending what answered that one.
    await create(client, [call_output(one), follow_up], previous_response_id=first.id)
    # Unchained: resend the history without the unanswered call and the reasoning before it.
    history = [GO, *dumped(first), call_output(one)]
    await create(client, [*history, follow_up])
    with_reasoning = [*history, dumped(second)[0], follow_up]
    await expect_error(
        create(client, with_reasoning), "of type 'reasoning' was provided without its required"
    )
    await expect_error(
        create(client, [*history, *dumped(second), follow_up]),
        f"No tool output found for computer call {two['call_id']}.",
    )


async def test_safety_checks_must_be_acknowledged_exactly(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    checks = [safety_check("malicious_instructions"), safety_check("irrelevant_domain")]
    call = computer_call(CLICK, pending_safety_checks=checks)
    fake.enqueue(response(call))
    first = await preview_create(client)
    asked = first.output[0]
    assert isinstance(asked, ResponseComputerToolCall) and asked.action is not None
    assert [c.code for c in asked.pending_safety_checks] == [
        "malicious_instructions",
        "irrelevant_domain",
    ]
    assert all(c.id.startswith("cu_sc_") and c.message for c in asked.pending_safety_checks)

    async def answer(acks: list[dict[str, Any]] | None, **kwargs: Any) -> Response:
        extra = {} if acks is None else {"acknowledged_safety_checks": acks}
        return await preview_create(client, [call_output(call, **extra)], **kwargs)

    chained = {"previous_response_id": first.id}
    param = "input[0].acknowledged_safety_checks"
    await expect_error(answer(None, **chained), "unacknowledged safety checks", param=param)
    await expect_error(
        answer(checks[:1], **chained), f"unacknowledged safety checks: {checks[1]['id']}"
    )
    forged = [*checks, {"id": "cu_sc_forged"}]
    await expect_error(answer(forged, **chained), "'cu_sc_forged' is not pending", param=param)
    # A resent call with its checks stripped does not escape them: the issued ones count.
    stripped = {**dumped(first)[0], "pending_safety_checks": []}
    await expect_error(
        preview_create(client, [GO, stripped, call_output(call)]), "unacknowledged safety"
    )
    # Only the ids have to match; code and message may be sent back or not.
    await answer([{"id": c["id"]} for c in reversed(checks)], **chained)
    await answer(checks, **chained)


async def test_reasoning_items_keep_their_following_item(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK])
    first = await first_turn(fake, client, reasoning("plan"), call)
    thought, asked = dumped(first)
    assert thought["summary"] == []  # no summary unless the request asks for one
    await expect_error(
        create(client, [GO, thought, call_output(call)]),
        f"Item '{thought['id']}' of type 'reasoning' was provided without its required "
        "following item.",
    )
    await expect_error(
        create(client, [GO, asked, thought, call_output(call)]), "without its required"
    )
    await create(client, [GO, thought, asked, call_output(call)])
    # An item_reference stands for the issued item itself.
    refs = [{"type": "item_reference", "id": thought["id"]}, {"id": asked["id"]}]
    await create(client, [GO, *refs, call_output(call)])
    await expect_error(
        create(client, [*dumped(first), call_output(call)], previous_response_id=first.id),
        f"Duplicate item found with id {thought['id']}.",
    )
    made_up = {"type": "reasoning", "id": "rs_made_up", "summary": []}
    await expect_error(
        create(client, [GO, made_up]), "Item with id 'rs_made_up' not found.", openai.NotFoundError
    )


async def test_store_false_needs_encrypted_reasoning(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    call = computer_call(actions=[CLICK])
    settings: dict[str, Any] = {"store": False, "include": ["reasoning.encrypted_content"]}
    first = await first_turn(fake, client, reasoning("plan"), call, **settings)
    thought, asked = dumped(first)
    assert thought["encrypted_content"].startswith("gAAAA")
    await create(client, [GO, thought, asked, call_output(call)], **settings)
    bare = {k: v for k, v in thought.items() if k != "encrypted_content"}
    await expect_error(
        create(client, [GO, bare, asked, call_output(call)], **settings),
        "Items are not persisted when `store` is set to false.",
        openai.NotFoundError,
    )
    tampered = {**thought, "encrypted_content": "gAAAAforged"}
    await expect_error(
        create(client, [GO, tampered, asked, call_output(call)], **settings),
        "could not be verified",
    )
    # Without the include, no encrypted content comes back at all.
    fake.enqueue(response(reasoning("again")))
    plain = await create(client, store=False)
    assert "encrypted_content" not in dumped(plain)[0]


async def test_preview_round_trip_and_usage_over_a_long_chain(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    call = computer_call({"type": "screenshot"})
    fake.enqueue(response(reasoning("look"), call))
    first = await preview_create(client, "x " * 3000, reasoning={"summary": "concise"})
    asked = first.output[1]
    assert isinstance(asked, ResponseComputerToolCall) and asked.action is not None
    assert asked.action.type == "screenshot" and asked.actions is None
    assert first.truncation == "auto" and first.tools[0].type == "computer_use_preview"
    second = await preview_create(client, [call_output(call)], previous_response_id=first.id)
    assert first.usage is not None and second.usage is not None
    # The chained context counts as input and, past 1024 tokens, comes from the prompt cache.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached >= 1024 and cached % 128 == 0
    assert cached <= first.usage.input_tokens + first.usage.output_tokens
