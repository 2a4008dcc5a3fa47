"""Structured output end to end (SPEC v2.3): `output_schema` on create and on follow-up
runs, over real HTTP, with the real SDK clients talking to the strict provider fakes.

For each provider: a valid answer lands in `output_json` (on the run and in
`run.completed`); an invalid one is sent back once with its validation errors, as
an ordinary next turn the strict fake accepts, and the repaired answer lands; an
answer still invalid after that fails the run with error type `output_invalid`,
and the session takes a follow-up run (the transcript stays valid). Bad schemas
are a 422 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.helpers import FAKE_COMPUTER, read_stream, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic, text_message
from tests.fakes.openai_server import FakeOpenAI, message, response

SCHEMA = {
    "type": "object",
    "properties": {"plan": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
    "required": ["plan", "price"],
    "additionalProperties": False,
}
VALID = {"plan": "Pro", "price": 20}


@dataclass
class Provider:
    """One provider behind the service: how to script a final answer, and what the
    service sent (the system prompt or instructions, and the latest user turn)."""

    name: str
    service: Service
    answer: Callable[[str], None]
    prompts: Callable[[], list[str]]
    last_user_text: Callable[[], str]
    script_errors: Callable[[], list[str]]


def schema_in(prompt: str) -> Any:
    """The schema the prompt states (None if it states none). On Postgres the stored
    schema comes back with its keys in JSONB's order: compared as JSON, not as text."""
    if "<OUTPUT_FORMAT>" not in prompt:
        return None
    block = prompt.split("<OUTPUT_FORMAT>", 1)[1].split("</OUTPUT_FORMAT>", 1)[0]
    return json.loads(block.strip().splitlines()[-1])


def _anthropic_user_text(body: dict[str, Any]) -> str:
    message_ = body["messages"][-1]
    assert message_["role"] == "user"
    return "\n".join(b["text"] for b in message_["content"] if b["type"] == "text")


def _openai_user_text(body: dict[str, Any]) -> str:
    item = body["input"][-1]
    assert item["type"] == "message" and item["role"] == "user"
    return "\n".join(p["text"] for p in item["content"] if p["type"] == "input_text")


@pytest.fixture(params=["anthropic", "openai"])
async def provider(
    request: pytest.FixtureRequest, clean_db: str, anthropic_fake: FakeAnthropic
) -> AsyncIterator[Provider]:
    anthropic_fake.strict = True
    if request.param == "anthropic":
        settings = make_settings(clean_db, anthropic_fake.base_url)
        async with ServiceServer(settings) as service:
            yield Provider(
                "anthropic",
                service,
                lambda text: anthropic_fake.enqueue(text_message(text)),
                lambda: [r.body["system"][0]["text"] for r in anthropic_fake.requests],
                lambda: _anthropic_user_text(anthropic_fake.requests[-1].body),
                lambda: anthropic_fake.script_errors,
            )
        return
    with FakeOpenAI(strict=True) as fake:
        settings = make_settings(
            clean_db,
            anthropic_fake.base_url,
            openai_api_key="test-key",
            openai_base_url=fake.base_url,
        )
        async with ServiceServer(settings) as service:
            yield Provider(
                "openai",
                service,
                lambda text: fake.enqueue(response(message(text))),
                lambda: [r.body["instructions"] for r in fake.requests],
                lambda: _openai_user_text(fake.requests[-1].body),
                lambda: fake.script_errors,
            )


async def _start(provider: Provider, **body: Any) -> tuple[str, str]:
    payload = {
        "provider": provider.name,
        "computer": FAKE_COMPUTER,
        "task": "Find the price of the Pro plan",
        "output_schema": SCHEMA,
    } | body
    created = await provider.service.client.post("/v1/sessions", json=payload)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["active_run_id"]


async def test_a_valid_answer_lands_in_output_json(provider: Provider) -> None:
    provider.answer(json.dumps(VALID))
    sid, rid = await _start(provider)
    client = provider.service.client

    events = await read_stream(client, sid, params={"until": "run_end"})

    run = await wait_for_run(client, sid, rid)
    assert run["status"] == "completed" and run["stop_reason"] == "end_turn"
    assert run["output_json"] == VALID and run["output_schema"] == SCHEMA
    assert json.loads(run["output"]) == VALID
    assert events[-1]["type"] == "run.completed"
    assert events[-1]["data"]["output_json"] == VALID
    # The model was told the schema (system prompt / instructions), in the one call made.
    (prompt,) = provider.prompts()
    assert schema_in(prompt) == SCHEMA
    assert provider.script_errors() == []


async def test_an_invalid_answer_is_repaired_once(provider: Provider) -> None:
    provider.answer('{"plan": "Pro", "price": "twenty"}')
    # The repaired answer comes in a fenced block after a sentence: read all the same.
    provider.answer('Here it is:\n```json\n{"plan": "Pro", "price": 20}\n```')
    sid, rid = await _start(provider)
    client = provider.service.client

    run = await wait_for_run(client, sid, rid)

    assert run["status"] == "completed", run
    assert run["output_json"] == VALID
    assert len(provider.prompts()) == 2
    # The second call sent the validation error back as the next user turn.
    repair = provider.last_user_text()
    assert "not valid against the required JSON Schema" in repair
    assert "at /price: 'twenty' is not of type 'number'" in repair
    turns = (await client.get(f"/v1/sessions/{sid}/turns", params={"run_id": rid})).json()
    assert len(turns["data"]) == 2 and run["turns"] == 2
    assert provider.script_errors() == []


async def test_an_answer_still_invalid_after_the_repair_fails_the_run(provider: Provider) -> None:
    provider.answer("The Pro plan costs $20 a month.")
    provider.answer('{"plan": "Pro"}')
    sid, rid = await _start(provider)
    client = provider.service.client

    events = await read_stream(client, sid, params={"until": "run_end"})

    run = await wait_for_run(client, sid, rid)
    assert run["status"] == "failed" and run["stop_reason"] == "error"
    assert run["error"]["type"] == "output_invalid"
    assert "'price' is a required property" in run["error"]["message"]
    assert run["output_json"] is None
    assert "the answer is not JSON" in provider.last_user_text()
    failed = events[-1]
    assert failed["type"] == "run.failed" and failed["data"]["error"]["type"] == "output_invalid"
    assert len(provider.prompts()) == 2  # one repair, never a second

    # The transcript is valid for the strict fake: a follow-up run, with a schema of its
    # own, and its answer validated against that one.
    provider.answer('["a", "b"]')
    follow = await client.post(
        f"/v1/sessions/{sid}/runs",
        json={"input": "List two letters", "output_schema": {"type": "array", "maxItems": 2}},
    )
    assert follow.status_code == 202, follow.text
    assert follow.json()["output_schema"] == {"type": "array", "maxItems": 2}
    second = await wait_for_run(client, sid, follow.json()["id"])
    assert second["status"] == "completed" and second["output_json"] == ["a", "b"]
    # Run 2's schema, not run 1's, in its prompt.
    assert schema_in(provider.prompts()[-1]) == {"type": "array", "maxItems": 2}
    assert provider.script_errors() == []


async def test_a_run_without_a_schema_has_no_output_json(provider: Provider) -> None:
    provider.answer("Twenty dollars.")
    sid, rid = await _start(provider, output_schema=None)

    run = await wait_for_run(provider.service.client, sid, rid)

    assert run["status"] == "completed" and run["output"] == "Twenty dollars."
    assert run["output_json"] is None and run["output_schema"] is None
    assert schema_in(provider.prompts()[0]) is None


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "objekt"}, "is not a valid JSON Schema"),
        ({"type": "object", "properties": {"a": {"minLength": -1}}}, "/properties/a/minLength"),
        ({"$ref": "https://example.com/schema.json"}, "only references within the schema"),
        ({"$ref": "#/$defs/missing", "$defs": {}}, "points at nothing"),
        ({"$schema": 7}, "$schema must be a string"),
        ({"description": "x" * 70_000}, "at most 65536 bytes"),
        ({"pattern": "("}, "is not a valid JSON Schema"),
    ],
)
async def test_a_bad_schema_is_a_422_naming_the_field(
    service: Service, schema: dict[str, Any], says: str
) -> None:
    sessions = await service.client.post(
        "/v1/sessions",
        json={"provider": "anthropic", "task": "t", "output_schema": schema},
    )
    assert sessions.status_code == 422, sessions.text
    assert sessions.headers["content-type"] == "application/problem+json"
    (error,) = sessions.json()["errors"]
    assert error["field"] == "output_schema" and says in error["message"]

    created = await service.client.post(
        "/v1/sessions", json={"provider": "anthropic", "computer": FAKE_COMPUTER}
    )
    sid = created.json()["id"]
    runs = await service.client.post(
        f"/v1/sessions/{sid}/runs", json={"input": "t", "output_schema": schema}
    )
    assert runs.status_code == 422, runs.text
    (error,) = runs.json()["errors"]
    assert error["field"] == "output_schema" and says in error["message"]


async def test_output_schema_on_create_needs_a_task(service: Service) -> None:
    answer = await service.client.post(
        "/v1/sessions",
        json={"provider": "anthropic", "computer": FAKE_COMPUTER, "output_schema": SCHEMA},
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "output_schema"
    for not_an_object in ([1], "string", True):
        answer = await service.client.post(
            "/v1/sessions",
            json={"provider": "anthropic", "task": "t", "output_schema": not_an_object},
        )
        assert answer.status_code == 422
        assert answer.json()["errors"][0]["field"] == "output_schema"
