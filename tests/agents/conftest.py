"""Harness for provider-loop tests: an in-memory RunContext, strict fake
Anthropic and OpenAI servers, and the real SDK clients pointed at them.

`MemoryContext` is not the thing under test: it keeps events, checkpoints,
turns and screenshots in lists and dicts, and checks that every state and
event the loop hands it is plain JSON (what the database would store).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anthropic
import openai
import pytest

from app.agents.base import (
    CheckRequest,
    Event,
    ProviderError,
    RunConfig,
    SafetyDecision,
    StoredShot,
    TurnRecord,
)
from app.agents.retry import error_code
from app.computers.base import Action, ActionResult, Computer, Display, ShotImage
from app.computers.fake import FakeComputer
from app.computers.scaling import png_size
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI

T = TypeVar("T")


def make_config(**overrides: Any) -> RunConfig:
    config = RunConfig(
        session_id="ses_test",
        run_id="run_1",
        provider="anthropic",
        model="claude-sonnet-4-6",
        system_prompt=None,
        computer_type="browser",
        display=Display(1280, 800),
        max_steps=20,
        image_retention=3,
        thinking_budget=None,
        tool_version=None,
        prompt_caching=True,
        max_tokens=4096,
    )
    return replace(config, **overrides)


def _json(value: Any) -> Any:
    """A JSON round trip: fails the test on anything the database could not store."""
    return json.loads(json.dumps(value))


class MemoryContext:
    """RunContext in memory. `shots` may be shared with a later context (a "restart")."""

    def __init__(
        self,
        config: RunConfig,
        computer: Computer,
        *,
        shots: dict[str, ShotImage] | None = None,
    ) -> None:
        self.config = config
        self.computer = computer
        self.events: list[Event] = []
        self.states: list[dict[str, Any]] = []
        self.turn_writes: list[TurnRecord] = []
        self.shots: dict[str, ShotImage] = shots if shots is not None else {}
        self.loads = 0
        self._appended = asyncio.Event()
        # Safety: `policy` is what policy_checks returns for every action; each
        # await_safety pops the next scripted decision (None: wait until cancelled).
        self.policy: list[CheckRequest] = []
        self.policy_seen: list[dict[str, Any]] = []
        self.decisions: list[SafetyDecision | None] = []
        self.safety_calls: list[SafetyCall] = []
        # note_executed calls: (call_id, action, the event types logged by then).
        self.executed: list[tuple[str, dict[str, Any] | None, list[str]]] = []
        # Recorded at once, but checked: the service commits a deferred checkpoint
        # with the next write, which must come before the model is called or an
        # action runs (the assertions below fail a loop that breaks that rule).
        self.deferred_pending = False
        self.deferred_count = 0

    @property
    def state(self) -> dict[str, Any]:
        return self.states[-1]

    @property
    def turns(self) -> dict[int, TurnRecord]:
        """The turns table: the last write of each index wins."""
        return {turn.index: turn for turn in self.turn_writes}

    def types(self) -> list[str]:
        return [type_ for type_, _ in self.events]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [data for kind, data in self.events if kind == type_]

    async def wait_for(self, type_: str) -> dict[str, Any]:
        """The first event of `type_`, once the loop has emitted it."""
        while not self.of_type(type_):
            self._appended.clear()
            await self._appended.wait()
        return self.of_type(type_)[0]

    async def emit(self, type_: str, data: dict[str, Any]) -> int:
        self.events.append((type_, _json(data)))
        self.deferred_pending = False
        self._appended.set()
        return len(self.events)

    async def checkpoint(
        self, state: dict[str, Any], events: Sequence[Event] = (), *, defer: bool = False
    ) -> None:
        self.states.append(_json(state))
        self.events.extend((type_, _json(data)) for type_, data in events)
        self.deferred_pending = defer
        self.deferred_count += defer
        self._appended.set()

    def _check_nothing_deferred(self, what: str) -> None:
        assert not self.deferred_pending, f"{what} while a deferred checkpoint was uncommitted"

    def note_executed(self, call_id: str, action: dict[str, Any] | None) -> None:
        self._check_nothing_deferred(f"action {call_id} ran")
        self.executed.append((call_id, _json(action), self.types()))

    async def record_turn(self, turn: TurnRecord) -> None:
        self.turn_writes.append(TurnRecord(**_json(turn.__dict__)))

    async def store_screenshot(self, image: ShotImage, page_url: str | None) -> StoredShot:
        shot_id = f"shot_{len(self.shots) + 1}"
        self.shots[shot_id] = image
        return StoredShot(
            shot_id, self.config.session_id, image.width, image.height, image.media_type, page_url
        )

    async def load_screenshot(self, shot_id: str) -> ShotImage:
        self.loads += 1
        return self.shots[shot_id]

    async def call_provider(self, call: Callable[[], Awaitable[T]]) -> T:
        # No retries here; only the runner's contract that SDK errors become ProviderError.
        self._check_nothing_deferred("the provider was called")
        try:
            return await call()
        except (anthropic.APIStatusError, openai.APIStatusError) as exc:
            raise ProviderError(
                str(exc), status_code=exc.status_code, code=error_code(exc)
            ) from exc

    async def policy_checks(self, action: dict[str, Any]) -> list[CheckRequest]:
        self.policy_seen.append(_json(action))
        return list(self.policy)

    async def await_safety(
        self,
        call_id: str,
        action: dict[str, Any] | None,
        checks: Sequence[CheckRequest],
        state: dict[str, Any],
    ) -> SafetyDecision:
        """Like the service's: persist the state (and the pending events the first time a
        call waits), then answer with the next scripted decision."""
        first = all(call.call_id != call_id for call in self.safety_calls)
        self.safety_calls.append(SafetyCall(call_id, _json(action), list(checks), _json(state)))
        self.states.append(_json(state))
        self.deferred_pending = False
        if first:
            self.events.extend(
                ("safety_check.pending", {"call_id": call_id, "code": c.code}) for c in checks
            )
            self.events.append(("run.awaiting_safety_check", {"call_id": call_id}))
        self._appended.set()
        assert self.decisions, f"unexpected await_safety for {call_id}"
        decision = self.decisions.pop(0)
        if decision is None:
            await asyncio.Event().wait()  # a human who never answers: cancel the run
            raise AssertionError("unreachable")
        if decision.approved and not decision.acknowledged:
            # The service acknowledges every check of the call at once.
            decision = replace(decision, acknowledged=tuple(checks))
        return decision


@dataclass(frozen=True)
class SafetyCall:
    """One await_safety call as the loop made it."""

    call_id: str
    action: dict[str, Any] | None
    checks: list[CheckRequest]
    state: dict[str, Any]


class Crash(Exception):
    """Stands for the process dying: nothing in the loop catches it."""


class CrashingComputer(FakeComputer):
    """A FakeComputer that "dies" while executing its `crash_at`-th action (1-based)."""

    def __init__(self, display: Display, crash_at: int) -> None:
        super().__init__(display, start_url="https://example.com/")
        self.crash_at = crash_at

    async def execute(self, action: Action) -> ActionResult:
        if len(self.actions) + 1 == self.crash_at:
            self.actions.append(action)
            raise Crash(f"crashed while running {action.type}")
        return await super().execute(action)


@pytest.fixture(scope="module")
def _strict_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(strict=True) as server:
        yield server


@pytest.fixture
def fake(_strict_server: FakeAnthropic) -> FakeAnthropic:
    """The strict fake: a request with no scripted reply left is a 500, so extra calls show."""
    _strict_server.reset()
    return _strict_server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test-key", max_retries=0)
    yield sdk
    await sdk.close()


def bodies(fake: FakeAnthropic) -> list[dict[str, Any]]:
    return [copy.deepcopy(request.body) for request in fake.requests]


@pytest.fixture(scope="module")
def _strict_openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(strict=True) as server:
        yield server


@pytest.fixture
def openai_fake(_strict_openai_server: FakeOpenAI) -> FakeOpenAI:
    """The strict fake Responses API: an unscripted request is a 500, a request the real
    API would reject is rejected the same way."""
    _strict_openai_server.reset()
    return _strict_openai_server


@pytest.fixture
async def openai_client(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="test-key", max_retries=0)
    yield sdk
    await sdk.close()


def openai_config(**overrides: Any) -> RunConfig:
    """make_config for an OpenAI session (GA model unless `model` says otherwise)."""
    return make_config(**{"provider": "openai", "model": "gpt-5.4", **overrides})


def openai_bodies(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [copy.deepcopy(request.body) for request in fake.requests]


def data_url_size(url: str) -> tuple[int, int]:
    """(width, height) of a base64 PNG data URL."""
    header, data = url.split(",", 1)
    assert header == "data:image/png;base64"
    return png_size(base64.b64decode(data))
