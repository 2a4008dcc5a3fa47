"""A real local HTTP server that speaks the Anthropic Messages API, for tests.

The official `anthropic` SDK talks to it through `base_url`, so a provider loop
is tested over the same wire it uses in production:

    with FakeAnthropic() as fake:
        fake.enqueue(tool_use_message(computer_call("screenshot")), text_message("Done"))
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test", max_retries=0)
        ...
        path, headers, body = fake.requests[0]

It is strict on purpose: requests are validated the way the API validates them
(see anthropic_validation.py) and rejected with the API's error envelope, so a
loop that would get a 400 from Anthropic gets one here too. Faults (429, 529,
500, slow replies, malformed bodies) are injected with `fail_next` and
`delay_next`. The server runs uvicorn on its own thread and event loop, so it
works from sync and async tests alike and never blocks the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

import pytest

from tests.fakes.anthropic_content import TOOLSET, RequestFacts
from tests.fakes.anthropic_errors import ApiError, ScriptedError, invalid
from tests.fakes.anthropic_messages import (
    PromptCache,
    Signatures,
    complete_message,
    computer_call,
    new_id,
    output_tokens,
    redacted_thinking_block,
    stream_events,
    text_message,
    thinking_block,
    tool_use,
    tool_use_message,
    toolset_call,
)
from tests.fakes.anthropic_validation import validate_request
from tests.fakes.http_server import (
    BackgroundServer,
    PauseOutcome,
    Receive,
    Reply,
    Scope,
    Send,
    pause,
    read_body,
    send_reply,
)

__all__ = [
    "MAX_REQUEST_BYTES",
    "FakeAnthropic",
    "RecordedRequest",
    "ScriptedError",
    "computer_call",
    "fake_anthropic",
    "redacted_thinking_block",
    "text_message",
    "thinking_block",
    "tool_use",
    "tool_use_message",
    "toolset_call",
]

MAX_REQUEST_BYTES = 32 * 1024 * 1024
MESSAGES_PATH = "/v1/messages"


class RecordedRequest(NamedTuple):
    """One request as the server saw it; unpacks as `(path, headers, body)`.

    `path` includes the query string, `headers` have lower-case names, and `body` is the
    parsed JSON (None when the body was not JSON or was too large to read).
    """

    path: str
    headers: dict[str, str]
    body: Any

    @property
    def betas(self) -> frozenset[str]:
        raw = self.headers.get("anthropic-beta", "")
        return frozenset(b.strip() for b in raw.split(",") if b.strip())


ScriptedReply = Mapping[str, Any] | ScriptedError
Responder = Callable[[RecordedRequest], ScriptedReply | Awaitable[ScriptedReply]]


@dataclass(frozen=True)
class _Settings:
    strict: bool
    api_key: str | None
    max_request_bytes: int
    default_text: str


@dataclass(frozen=True)
class _Queued:
    reply: ScriptedReply | Responder
    delay: float


class FakeAnthropic:
    """The fake Messages API server. Use as a context manager or call start()/stop().

    strict: with no scripted reply left, answer 500 "no scripted response" instead of a plain
        end_turn text message, so a test notices an unexpected extra call.
    api_key: when set, only this key is accepted (as `x-api-key` or `Authorization: Bearer`).
    max_request_bytes: bodies larger than this get 413 request_too_large (the API's 32 MB).
    """

    def __init__(
        self,
        *,
        strict: bool = False,
        api_key: str | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        default_text: str = "Done.",
    ) -> None:
        # The knobs a test may change on a shared server; reset() puts these values back.
        self._settings = _Settings(strict, api_key, max_request_bytes, default_text)
        self.strict = strict
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.default_text = default_text
        self.script_errors: list[str] = []
        # Everything below is shared with the server thread: touch it only under the lock.
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[_Queued] = deque()
        self._faults: deque[ScriptedError] = deque()
        self._delays: deque[float] = deque()
        self._signatures = Signatures()
        self._cache = PromptCache()
        self._disconnects = 0
        self._http = BackgroundServer(self._asgi, name="fake-anthropic")

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`: pass it as the SDK's base_url (or ANTHROPIC_BASE_URL)."""
        return self._http.base_url

    def start(self) -> Self:
        self._http.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests being held back are answered 503 at once."""
        self._http.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting

    def enqueue(self, *replies: ScriptedReply | Responder, delay: float = 0.0) -> None:
        """Queue replies for the next valid requests, in order.

        Each is a Message-shaped dict (missing ids, signatures, stop_reason and usage are filled
        in), a ScriptedError, or a callable taking the RecordedRequest and returning either
        (it may be async). `delay` holds each reply back that many seconds (interruptible).
        """
        with self._lock:
            self._queue.extend(_Queued(r, delay) for r in replies)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: float | None = None,
        body: Any = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` requests with `status` before validation and without
        consuming a scripted reply: 429 rate_limit_error, 529 overloaded_error, 500 api_error..."""
        error = ScriptedError(status, message, retry_after=retry_after, body=body)
        with self._lock:
            self._faults.extend([error] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next `times` requests for `seconds` before answering them. The wait ends
        early when the client disconnects (no reply is sent) or the server stops."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def reset(self) -> None:
        """Forget everything scripted, recorded, signed and cached, and put back the settings
        the server was made with (strict, api_key, ...): a shared server then starts each
        test as new."""
        settings = self._settings
        self.strict = settings.strict
        self.api_key = settings.api_key
        self.max_request_bytes = settings.max_request_bytes
        self.default_text = settings.default_text
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._faults.clear()
            self._delays.clear()
            self._signatures = Signatures()
            self._cache = PromptCache()
            self._disconnects = 0
            self.script_errors.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            return self._requests[-1]

    @property
    def pending(self) -> int:
        """Scripted replies not yet served."""
        with self._lock:
            return len(self._queue)

    @property
    def disconnects(self) -> int:
        """Requests whose client went away while the server was holding them back."""
        with self._lock:
            return self._disconnects

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[RecordedRequest]:
        """Wait (without blocking the caller's loop) until `count` requests have arrived."""
        await self._wait_until(lambda: len(self._requests) >= count, within, f"{count} requests")
        return self.requests

    async def wait_for_disconnects(self, count: int = 1, within: float = 5.0) -> None:
        await self._wait_until(lambda: self._disconnects >= count, within, f"{count} disconnects")

    async def _wait_until(self, ready: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while True:
            with self._lock:
                if ready():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"FakeAnthropic: timed out waiting for {what}")
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ the app

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw, too_large = await read_body(receive, self.max_request_bytes)
        if raw is None:
            return  # the client went away mid-body
        try:
            reply = await self._handle(scope, raw, too_large, receive)
        except ApiError as error:
            reply = ScriptedError.from_api_error(error).reply()
        except Exception as error:  # a responder (or the fake) broke: say so in the envelope
            problem = f"{type(error).__name__}: {error}"
            self._script_error(problem)
            reply = ScriptedError(500, f"FakeAnthropic: {problem}").reply()
        if reply is not None:
            await send_reply(send, reply)

    async def _handle(
        self, scope: Scope, raw: bytes, too_large: bool, receive: Receive
    ) -> Reply | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        body: Any = None
        if raw:
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        request = RecordedRequest(scope["path"] + (f"?{query}" if query else ""), headers, body)
        with self._lock:
            self._requests.append(request)

        if scope["path"] != MESSAGES_PATH or scope["method"] != "POST":
            raise ApiError(404, "not_found_error", f"Not found: {scope['method']} {scope['path']}")
        self._authenticate(headers)
        if too_large:
            raise ApiError(
                413,
                "request_too_large",
                f"Request exceeds the maximum allowed number of bytes ({self.max_request_bytes}).",
            )
        if not headers.get("anthropic-version"):
            raise invalid("anthropic-version: header is required")
        if body is None:
            raise invalid("There was an error parsing the body of your request: not valid JSON")

        with self._lock:
            delay = self._delays.popleft() if self._delays else 0.0
            fault = self._faults.popleft() if self._faults else None
        if (outcome := await self._hold(delay, receive)) != "elapsed":
            return self._cut_short(outcome)
        if fault is not None:
            return fault.reply()

        with self._lock:
            facts = validate_request(body, headers, self._signatures)
            queued = self._queue.popleft() if self._queue else None
        if queued is None:
            if self.strict:
                self._script_error("no scripted response left for this request")
                raise ApiError(500, "api_error", "FakeAnthropic: no scripted response")
            queued = _Queued(text_message(self.default_text), 0.0)
        if (outcome := await self._hold(queued.delay, receive)) != "elapsed":
            return self._cut_short(outcome)

        scripted = await self._resolve(queued.reply, request)
        if isinstance(scripted, ScriptedError):
            return scripted.reply()
        return self._message_reply(scripted, body, facts)

    @staticmethod
    async def _resolve(reply: ScriptedReply | Responder, request: RecordedRequest) -> ScriptedReply:
        if not callable(reply):
            return reply
        produced = reply(request)
        return await produced if inspect.isawaitable(produced) else produced

    async def _hold(self, seconds: float, receive: Receive) -> PauseOutcome:
        """Hold the request back `seconds`, counting a client that leaves meanwhile."""
        stopping = self._http.stopping
        assert stopping is not None
        outcome = await pause(seconds, receive, stopping)
        if outcome == "disconnected":
            with self._lock:
                self._disconnects += 1
        return outcome

    @staticmethod
    def _cut_short(outcome: PauseOutcome) -> Reply | None:
        """Nothing for a client that left; 503 when the server is stopping."""
        if outcome == "disconnected":
            return None
        return ScriptedError(503, "FakeAnthropic is shutting down").reply()

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        # The SDK sends api_key as `Authorization: Bearer`; curl and older clients use x-api-key.
        bearer = headers.get("authorization", "")
        key = headers.get("x-api-key") or (
            bearer[7:] if bearer.lower().startswith("bearer ") else ""
        )
        if not key:
            raise ApiError(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            raise ApiError(401, "authentication_error", "invalid x-api-key")

    def _message_reply(
        self, scripted: Mapping[str, Any], body: Mapping[str, Any], facts: RequestFacts
    ) -> Reply:
        with self._lock:
            message = complete_message(scripted, model=body["model"], signatures=self._signatures)
            usage = self._cache.usage(body, facts.image_sizes)
        self._check_script(message, body, facts)
        usage["output_tokens"] = output_tokens(message["content"])
        message["usage"] = {**usage, **(message.get("usage") or {})}
        request_id = new_id("req").encode()
        if body.get("stream"):
            headers = [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                (b"request-id", request_id),
            ]
            return Reply(200, headers, stream_events(message))
        headers = [(b"content-type", b"application/json"), (b"request-id", request_id)]
        return Reply(200, headers, [json.dumps(message).encode()])

    def _check_script(
        self, message: Mapping[str, Any], body: Mapping[str, Any], facts: RequestFacts
    ) -> None:
        """A tool call the request did not offer would never come from the real model: fail
        loudly, so a test scripted for the wrong tool version does not pass by accident."""
        names = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        for block in message["content"]:
            if block.get("type") != "tool_use":
                continue
            if block.get("toolset_name") == "computer":
                offered = TOOLSET in facts.tool_types
            else:
                offered = block.get("name") in names
            if not offered:
                problem = (
                    f"scripted tool_use {block.get('name')!r} is not offered by the request's tools"
                )
                self._script_error(problem)
                raise ApiError(500, "api_error", f"FakeAnthropic: {problem}")

    def _script_error(self, problem: str) -> None:
        with self._lock:
            self.script_errors.append(problem)


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A started FakeAnthropic per test (register with `pytest_plugins` or import it)."""
    with FakeAnthropic() as fake:
        yield fake
