"""A real local HTTP server that speaks the OpenAI Responses API, for tests.

The official `openai` SDK talks to it through `base_url` (which ends in `/v1`,
like the SDK's default `https://api.openai.com/v1`), so a provider loop is
tested over the same wire it uses in production:

    with FakeOpenAI() as fake:
        call = computer_call({"type": "click", "x": 10, "y": 20, "button": "left"})
        fake.enqueue(response(reasoning("Click it"), call), response(message("Done")))
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        ...
        path, headers, body = fake.requests[0]

It is strict on purpose. Requests are checked the way the API checks them
(openai_validation.py for shapes, openai_state.py for what depends on earlier
responses: chaining, unanswered calls, safety-check acknowledgements, reasoning
items) and rejected with the API's error envelope, so a loop that would get a
400 from OpenAI gets one here too. Faults (429, 500, slow replies, malformed
bodies) are injected with `fail_next` and `delay_next`. The server runs on its
own thread and event loop (http_server.BackgroundServer), so it works from sync
and async tests alike.
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
from tests.fakes.openai_errors import ApiError, ScriptedError, authenticate, invalid, json_reply
from tests.fakes.openai_items import (
    cached_prefix,
    complete_response,
    computer_call,
    message,
    reasoning,
    response,
    safety_check,
)
from tests.fakes.openai_state import ConversationStore, Prepared
from tests.fakes.openai_validation import RequestFacts, validate_request

__all__ = [
    "FakeOpenAI",
    "RecordedRequest",
    "ScriptedError",
    "computer_call",
    "fake_openai",
    "message",
    "reasoning",
    "response",
    "safety_check",
]

MAX_REQUEST_BYTES = 64 * 1024 * 1024
RESPONSES_PATH = "/v1/responses"


class RecordedRequest(NamedTuple):
    """One request as the server saw it; unpacks as `(path, headers, body)`.

    `path` includes the query string, `headers` have lower-case names, and `body` is the
    parsed JSON (None when the body was not JSON or was too large to read).
    """

    path: str
    headers: dict[str, str]
    body: Any


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


class FakeOpenAI:
    """The fake Responses API server. Use as a context manager or call start()/stop().

    strict: with no scripted reply left, answer 500 "no scripted response" instead of a plain
        assistant message, so a test notices an unexpected extra call.
    api_key: when set, only `Authorization: Bearer <api_key>` is accepted (any key otherwise).
    max_request_bytes: larger bodies get 413.
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
        self._sent: list[dict[str, Any]] = []
        self._queue: deque[_Queued] = deque()
        self._faults: deque[ScriptedError] = deque()
        self._delays: deque[float] = deque()
        self._store = ConversationStore()
        self._disconnects = 0
        self._http = BackgroundServer(self._asgi, name="fake-openai")

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`: the SDK's base_url (or OPENAI_BASE_URL). The SDK
        appends `/responses` to it."""
        return f"{self._http.base_url}/v1"

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

        Each is a Response-shaped dict (`response(...)`; anything missing is filled in), a
        ScriptedError, or a callable taking the RecordedRequest and returning either (it may be
        async). `delay` holds each reply back that many seconds (interruptible).
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
        consuming a scripted reply: 429 rate_limit_exceeded, 500 server_error..."""
        error = ScriptedError(status, message, retry_after=retry_after, body=body)
        with self._lock:
            self._faults.extend([error] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next `times` requests for `seconds` before answering them. The wait ends
        early when the client disconnects (no reply is sent) or the server stops."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def reset(self) -> None:
        """Forget everything scripted, recorded and issued, and put back the settings the
        server was made with (strict, api_key, ...): a shared server then starts each test
        as new."""
        settings = self._settings
        self.strict = settings.strict
        self.api_key = settings.api_key
        self.max_request_bytes = settings.max_request_bytes
        self.default_text = settings.default_text
        with self._lock:
            self._requests.clear()
            self._sent.clear()
            self._queue.clear()
            self._faults.clear()
            self._delays.clear()
            self._store = ConversationStore()
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
    def responses(self) -> list[dict[str, Any]]:
        """Every Response the server has sent, oldest first."""
        with self._lock:
            return list(self._sent)

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
                raise TimeoutError(f"FakeOpenAI: timed out waiting for {what}")
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
            reply = ScriptedError(500, f"FakeOpenAI: {problem}").reply()
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

        method, path = scope["method"], scope["path"]
        authenticate(headers, self.api_key)
        if method == "GET" and path.startswith(f"{RESPONSES_PATH}/"):
            return self._retrieve(path.removeprefix(f"{RESPONSES_PATH}/"))
        if path != RESPONSES_PATH or method != "POST":
            raise ApiError(404, f"Invalid URL ({method} {path})")
        if too_large:
            raise ApiError(413, f"Request too large: over {self.max_request_bytes} bytes.")
        if body is None:
            raise invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly.)"
            )

        with self._lock:
            delay = self._delays.popleft() if self._delays else 0.0
            fault = self._faults.popleft() if self._faults else None
        if (outcome := await self._hold(delay, receive)) != "elapsed":
            return self._cut_short(outcome)
        if fault is not None:
            return fault.reply()

        facts = validate_request(body)
        with self._lock:
            prepared = self._store.prepare(body, facts.items, facts.image_sizes)
            queued = self._queue.popleft() if self._queue else None
        if queued is None:
            if self.strict:
                self._script_error("no scripted response left for this request")
                raise ApiError(500, "FakeOpenAI: no scripted response", error_type="server_error")
            queued = _Queued(response(message(self.default_text)), 0.0)
        if (outcome := await self._hold(queued.delay, receive)) != "elapsed":
            return self._cut_short(outcome)

        scripted = await self._resolve(queued.reply, request)
        if isinstance(scripted, ScriptedError):
            return scripted.reply()
        return self._response_reply(scripted, body, facts, prepared)

    def _retrieve(self, response_id: str) -> Reply:
        with self._lock:
            found = self._store.get(response_id)
        if found is None:
            raise ApiError(404, f"Response with id '{response_id}' not found.", param="response_id")
        return json_reply(found)

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
        return ScriptedError(503, "FakeOpenAI is shutting down").reply()

    def _response_reply(
        self,
        scripted: Mapping[str, Any],
        body: Mapping[str, Any],
        facts: RequestFacts,
        prepared: Prepared,
    ) -> Reply:
        self._check_script(scripted, facts)
        with self._lock:
            reused = self._store.already_issued(scripted)
            if reused is None:
                wants_encrypted = "reasoning.encrypted_content" in (body.get("include") or [])
                encrypted = {
                    item["id"]: self._store.encrypted_content(item["id"])
                    for item in scripted.get("output") or []
                    if wants_encrypted and item.get("type") == "reasoning" and "id" in item
                }
                full = complete_response(
                    scripted,
                    body,
                    input_tokens=prepared.input_tokens,
                    cached_tokens=cached_prefix(prepared.context_tokens),
                    encrypted=encrypted,
                )
                self._store.record(full, prepared, stored=body.get("store") is not False)
                self._sent.append(full)
        if reused is not None:
            problem = f"scripted id {reused} was already sent: build a fresh response"
            self._script_error(problem)
            raise ApiError(500, f"FakeOpenAI: {problem}", error_type="server_error")
        return json_reply(full)

    def _check_script(self, scripted: Mapping[str, Any], facts: RequestFacts) -> None:
        """A computer_call for a tool the request did not offer would never come from the real
        model: fail loudly, so a test scripted for the wrong tool version does not pass."""
        for item in scripted.get("output") or []:
            if item.get("type") != "computer_call":
                continue
            tool = "computer_use_preview" if "action" in item else "computer"
            if tool not in facts.tool_types:
                problem = f"scripted computer_call needs the {tool!r} tool, which the request lacks"
                self._script_error(problem)
                raise ApiError(500, f"FakeOpenAI: {problem}", error_type="server_error")

    def _script_error(self, problem: str) -> None:
        with self._lock:
            self.script_errors.append(problem)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI per test (register with `pytest_plugins` or import it)."""
    with FakeOpenAI() as fake:
        yield fake
