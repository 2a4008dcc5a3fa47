"""The provider retry policy: retry-after parsing and which failures are retried."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from app.agents.base import ProviderError
from app.agents.retry import RetryPolicy, call_with_retries

POLICY = RetryPolicy(
    max_retries=2, backoff_initial_s=0.01, backoff_max_s=0.02, retry_after_max_s=0.05
)


def overloaded(headers: dict[str, str]) -> anthropic.APIStatusError:
    request = httpx.Request("POST", "https://api.example/v1/messages")
    response = httpx.Response(503, headers=headers, request=request)
    return anthropic.APIStatusError("unavailable", response=response, body=None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 0.01),  # no header: the backoff
        ({"retry-after": "0.03"}, 0.03),
        ({"retry-after": "120"}, 0.05),  # capped
        ({"retry-after-ms": "20"}, 0.02),
        ({"retry-after": "soon"}, 0.01),  # unreadable: the backoff, not a crash
        ({"retry-after-ms": "nan"}, 0.01),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
    ],
)
async def test_retry_after_is_honoured_and_never_crashes(
    headers: dict[str, str], expected: float
) -> None:
    retries: list[dict[str, Any]] = []
    attempts = 0

    async def call() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise overloaded(headers)
        return "ok"

    async def on_retry(data: dict[str, Any]) -> None:
        retries.append(data)

    assert await call_with_retries(call, POLICY, on_retry) == "ok"
    assert [r["wait_s"] for r in retries] == [expected]
    json.dumps(retries, allow_nan=False)  # the event data stays valid JSON


async def test_retries_are_bounded_and_report_the_provider_error() -> None:
    async def call() -> str:
        raise overloaded({})

    retries: list[dict[str, Any]] = []

    async def on_retry(data: dict[str, Any]) -> None:
        retries.append(data)

    with pytest.raises(ProviderError) as failure:
        await call_with_retries(call, POLICY, on_retry)
    assert failure.value.status_code == 503 and len(retries) == 2
