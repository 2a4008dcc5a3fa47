"""GET /metrics after real runs (SPEC v2.4): the run, its model calls (a retried one too),
its actions, tokens and cost, read back with prometheus-client's own parser; labels
bounded (an unknown model is `other`, no ids); METRICS_TOKEN guards the endpoint;
webhook delivery attempts counted by outcome."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.observability.prices import BUILT_IN
from tests.api.helpers import create_session, wait_for_run
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)
from tests.fakes.webhook_receiver import SECRET, WebhookReceiver

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(service: Service, **headers: str) -> Samples:
    response = await service.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_show_a_run_its_model_calls_actions_tokens_and_cost(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.fail_next(529)  # the first call is retried once
    strict_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[100, 200])),
        text_message("Done."),
    )
    session = await create_session(service.client, task="Click it")
    sid, rid = session["id"], session["active_run_id"]
    run = await wait_for_run(service.client, sid, rid)
    assert run["status"] == "completed"

    samples = await scrape(service)
    model = {"provider": "anthropic", "model": "claude-sonnet-4-6"}
    assert (
        value(samples, "agent_sessions_runs_total", provider="anthropic", status="completed") == 1
    )
    # Three requests: the one answered 529, its retry, and the call after the click.
    assert value(samples, "agent_sessions_model_call_seconds_count", **model) == 3
    assert (
        value(samples, "agent_sessions_provider_retries_total", provider="anthropic", status="529")
        == 1
    )
    assert (
        value(samples, "agent_sessions_action_seconds_count", computer="fake", action="click") == 1
    )
    # Tokens: exactly the run's usage, by kind.
    usage = run["usage"]
    kinds = {
        "input": "input_tokens",
        "output": "output_tokens",
        "cache_read": "cache_read_input_tokens",
        "cache_write": "cache_creation_input_tokens",
    }
    for kind, key in kinds.items():
        assert value(samples, "agent_sessions_tokens_total", **model, kind=kind) == usage[key]
    assert usage["output_tokens"] > 0 and usage["cache_creation_input_tokens"] > 0
    price = BUILT_IN["claude-sonnet-4-6"]
    expected = (
        usage["input_tokens"] * price.input
        + usage["output_tokens"] * price.output
        + usage["cache_creation_input_tokens"] * price.cache_write
        + usage["cache_read_input_tokens"] * price.cache_read
    ) / 1e6
    assert value(samples, "agent_sessions_cost_usd_total", **model) == pytest.approx(expected)
    assert value(samples, "agent_sessions_event_commit_seconds_count") > 0
    # Nothing runs, nothing streams, no lease is held any more.
    assert value(samples, "agent_sessions_runs_active") == 0
    assert value(samples, "agent_sessions_leases_held") == 0
    assert value(samples, "agent_sessions_sse_subscribers") == 0
    assert value(samples, "agent_sessions_webhook_deliveries_total", outcome="delivered") == 0
    # No ids in any label.
    for _, labels in samples:
        for _, label in labels:
            assert sid not in label and rid not in label


async def test_an_unknown_model_is_labelled_other_and_costs_nothing(
    service: Service, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("Hello."))
    session = await create_session(service.client, task="Say hello", model="acme-computer-model")
    run = await wait_for_run(service.client, session["id"], session["active_run_id"])
    assert run["status"] == "completed"

    samples = await scrape(service)
    other = {"provider": "anthropic", "model": "other"}
    assert value(samples, "agent_sessions_model_call_seconds_count", **other) == 1
    assert value(samples, "agent_sessions_tokens_total", **other, kind="output") > 0
    assert ("agent_sessions_cost_usd_total", frozenset(other.items())) not in samples
    assert not any("acme" in label for _, labels in samples for _, label in labels)


async def test_the_metrics_token_guards_the_endpoint(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, anthropic_fake.base_url, metrics_token="scrape-me")
    async with ServiceServer(settings) as service:
        refused = await service.client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        wrong = await service.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        samples = await scrape(service, Authorization="Bearer scrape-me")
        assert ("agent_sessions_runs_active", frozenset()) in samples


async def test_webhook_attempts_are_counted_by_outcome(
    clean_db: str, strict_fake: FakeAnthropic
) -> None:
    strict_fake.enqueue(text_message("Done."))
    with WebhookReceiver(lambda request, so_far: 500 if len(so_far) == 1 else 200) as receiver:
        settings = make_settings(
            clean_db,
            strict_fake.base_url,
            webhook_secret=SECRET,
            webhook_allow_private=True,  # the receiver is on loopback
            webhook_retry_delays_s="0.05",
            webhook_poll_s=0.2,
        )
        async with ServiceServer(settings) as service:
            session = await create_session(
                service.client,
                task="Look",
                webhook={"url": receiver.url, "events": ["run.completed"]},
            )
            await wait_for_run(service.client, session["id"], session["active_run_id"])
            deadline = time.monotonic() + 20
            while True:
                samples = await scrape(service)
                outcomes = {
                    outcome: value(
                        samples, "agent_sessions_webhook_deliveries_total", outcome=outcome
                    )
                    for outcome in ("delivered", "retrying", "failed")
                }
                if outcomes["delivered"]:
                    break
                assert time.monotonic() < deadline, f"not delivered: {outcomes}"
                await asyncio.sleep(0.05)
    assert outcomes == {"delivered": 1, "retrying": 1, "failed": 0}
