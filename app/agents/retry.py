"""The service's own retry policy for provider calls (SDK clients run with max_retries=0).

Every retry is visible: the caller emits a `provider.retry` event before it waits.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import openai

from app.agents.base import ProviderError

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

_STATUS_ERRORS = (anthropic.APIStatusError, openai.APIStatusError)
_TRANSIENT_ERRORS = (
    anthropic.APIConnectionError,  # includes APITimeoutError
    openai.APIConnectionError,
    anthropic.APIResponseValidationError,  # a malformed reply
    openai.APIResponseValidationError,
    TimeoutError,
    # The SDK raises a bare JSONDecodeError for a 200 whose body is not JSON.
    json.JSONDecodeError,
)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    timeout_s: float = 300.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 20.0
    retry_after_max_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.backoff_initial_s * (2 ** (attempt - 1)), self.backoff_max_s))


def _retry_after(exc: BaseException, policy: RetryPolicy) -> float | None:
    """The wait the provider asked for (retry-after-ms, retry-after seconds or an HTTP
    date), capped; None when absent or unreadable (the backoff applies then)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    seconds: float | None = None
    if (value := headers.get("retry-after-ms")) is not None:
        seconds = _finite(value, scale=1000.0)
    if seconds is None and (value := headers.get("retry-after")) is not None:
        seconds = _finite(value)
        if seconds is None:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                return None
    if seconds is None:
        return None
    return max(0.0, min(seconds, policy.retry_after_max_s))


def _finite(value: str, scale: float = 1.0) -> float | None:
    try:
        number = float(value) / scale
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def classify(exc: BaseException) -> tuple[bool, int | None, str]:
    """(retryable, status code, message) of a provider exception."""
    if isinstance(exc, _STATUS_ERRORS):
        status = exc.status_code
        return status in RETRYABLE_STATUS or status >= 500, status, _message(exc)
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return False, None, f"{type(exc).__name__}: {exc}"


def error_code(exc: BaseException) -> str | None:
    """OpenAI's `code` (the SDK lifts it onto the exception), else Anthropic's error type."""
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    body: Any = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        value = body["error"].get("type")
        return value if isinstance(value, str) else None
    return None


def _message(exc: BaseException) -> str:
    body: Any = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"{error.get('type', 'error')}: {error['message']}"
    return str(exc)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    on_retry: Callable[[dict[str, Any]], Awaitable[None]],
) -> T:
    """Await `call()` under the policy; raise ProviderError when retries are spent."""
    attempt = 0
    while True:
        try:
            return await asyncio.wait_for(call(), policy.timeout_s)
        except (anthropic.APIError, openai.APIError, TimeoutError, json.JSONDecodeError) as exc:
            retryable, status, message = classify(exc)
            if isinstance(exc, TimeoutError):
                message = f"the provider did not answer within {policy.timeout_s:g} s"
            attempt += 1
            if not retryable or attempt > policy.max_retries:
                raise ProviderError(message, status_code=status, code=error_code(exc)) from exc
            wait = _retry_after(exc, policy)
            if wait is None:
                wait = policy.backoff(attempt)
            await on_retry(
                {
                    "attempt": attempt,
                    "status_code": status,
                    "wait_s": round(wait, 3),
                    "error": message,
                }
            )
            await asyncio.sleep(wait)
