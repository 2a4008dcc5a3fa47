"""The one object the runner, the run contexts and the event log report to: it counts
(metrics.py), logs (logging.py) and, when tracing is on, opens spans (tracing.py).

Spans nest by the task's OpenTelemetry context: a run's scope makes its span current
in the run's outer task, whose inner tasks (the computer's start, the provider loop)
inherit it; `turn.started` makes the turn's span current in the loop's task, so the
model calls and actions that follow are its children, and the httpx instrumentation
puts the provider's HTTP request under its model call.

A run's state changes are logged where they are committed: the event log hands over
each committed batch with the context of the code that wrote each write, and every
`run.*` event (and each provider retry, each session created or closed) becomes one
line, in that context: once per change, on the replica that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import Context, ContextVar
from typing import TYPE_CHECKING, Any

from app.computers.base import Action, ActionResult, Computer, ShotImage
from app.observability.logging import bind_log_context
from app.observability.metrics import Metrics
from app.observability.prices import PriceTable

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from app.events.types import StoredEvent
    from app.observability.tracing import Tracing

log = logging.getLogger("app.runs")


class RunScope:
    """One run's span (if tracing), its current turn's span, and where they end."""

    def __init__(self, span: Span | None, token: object | None) -> None:
        self.span = span
        self.turn: Span | None = None
        self._token = token

    def end(self) -> None:
        if self.turn is not None:
            self.turn.end()
            self.turn = None
        if self.span is not None:
            from opentelemetry import context

            self.span.end()
            if self._token is not None:
                context.detach(self._token)  # type: ignore[arg-type]
            self.span = None


_current_run: ContextVar[RunScope | None] = ContextVar("observed_run", default=None)


class Observer:
    """Metrics, log lines and spans of the service's work."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        prices: PriceTable | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.prices = prices or PriceTable()
        self.tracing = tracing

    # ---- runs ------------------------------------------------------------------

    def run_scope(self, session_id: str, run_id: str) -> RunScope:
        """Called by the run's outer task as it starts: its log lines carry the run's
        ids from now on, and its span (if tracing) is current for it and its inner tasks."""
        bind_log_context(session_id=session_id, run_id=run_id)
        span, token = None, None
        if self.tracing is not None:
            from opentelemetry import context, trace

            span = self.tracing.tracer.start_span(
                "run",
                attributes={
                    "agent_sessions.session_id": session_id,
                    "agent_sessions.run_id": run_id,
                },
            )
            token = context.attach(trace.set_span_in_context(span))
        scope = RunScope(span, token)
        _current_run.set(scope)
        return scope

    def run_loaded(self, tenant: str, provider: str, model: str) -> None:
        """The run's session is known: its tenant on the log lines, its model on the span."""
        bind_log_context(tenant=tenant)
        scope = _current_run.get()
        if scope is not None and scope.span is not None:
            scope.span.set_attributes(
                {"agent_sessions.tenant": tenant, "gen_ai.provider.name": provider}
                | {"gen_ai.request.model": model}
            )

    def run_ended(self, provider: str, status: str, error: Mapping[str, Any] | None) -> None:
        """The run's terminal state is committed (once per run)."""
        self.metrics.runs.labels(provider, status).inc()
        scope = _current_run.get()
        if scope is not None and scope.span is not None:
            from opentelemetry.trace import Status, StatusCode

            scope.span.set_attribute("agent_sessions.status", status)
            if status == "failed":
                kind = (error or {}).get("type") or "error"
                scope.span.set_status(Status(StatusCode.ERROR, str(kind)))

    # ---- turns, model calls, actions -------------------------------------------

    def turn_started(self, index: int) -> None:
        """A new turn of the run in this task: the previous one's span ends, and the new
        one is current for this task (the loop's) from now on."""
        scope = _current_run.get()
        if scope is None or scope.span is None or self.tracing is None:
            return
        from opentelemetry import context, trace

        if scope.turn is not None:
            scope.turn.end()
        scope.turn = self.tracing.tracer.start_span(
            "turn",
            context=trace.set_span_in_context(scope.span),
            attributes={"agent_sessions.turn": index},
        )
        context.attach(trace.set_span_in_context(scope.turn))

    @contextlib.contextmanager
    def model_call(self, provider: str, model: str) -> Iterator[None]:
        """One provider request (one attempt): its duration, and its span."""
        label = self.prices.label(model)
        span_cm: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.tracing is not None:
            span_cm = self.tracing.tracer.start_as_current_span(
                f"chat {model}",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model,
                },
            )
        started = time.perf_counter()
        finished = True
        with span_cm:
            try:
                yield
            except asyncio.CancelledError:
                finished = False  # abandoned (a cancel, a timeout): not a call's duration
                raise
            finally:
                if finished:
                    self.metrics.model_call_seconds.labels(provider, label).observe(
                        time.perf_counter() - started
                    )

    def provider_retry(self, provider: str, status_code: int | None) -> None:
        status = "none" if status_code is None else str(status_code)
        self.metrics.provider_retries.labels(provider, status).inc()

    def turn_usage(self, provider: str, model: str, usage: Mapping[str, int]) -> None:
        """One turn's usage, counted once (when its row is first written)."""
        cost = self.prices.cost(provider, model, usage)
        self.metrics.count_tokens(provider, self.prices.label(model), usage, cost)

    def computer(self, computer: Computer, kind: str) -> Computer:
        """`computer` with each action timed (and traced)."""
        return ObservedComputer(computer, kind, self)

    # ---- the event log and webhooks --------------------------------------------

    def committed(
        self, seconds: float, writes: Sequence[tuple[Context | None, Sequence[StoredEvent]]]
    ) -> None:
        """A batch of the event log's writer committed in `seconds`; `writes` are its
        writes' events with the context each was written from."""
        self.metrics.event_commit_seconds.observe(seconds)
        for context, events in writes:
            for event in events:
                if event.type.startswith(("run.", "session.")) or event.type == "provider.retry":
                    if context is None:
                        log_event(event)
                    else:
                        context.run(log_event, event)

    def webhook_delivery(self, outcome: str) -> None:
        """One delivery attempt: `delivered` (2xx), `retrying` (failed, another attempt
        follows) or `failed` (given up); an `on_outcome` listener of the webhook worker."""
        self.metrics.webhook_deliveries.labels(outcome).inc()


def log_event(event: StoredEvent) -> None:
    """One line for a committed state change, with its cause when it is a failure."""
    data = event.data or {}
    fields: dict[str, Any] = {"session_id": event.session_id, "event": event.type}
    fields["seq"] = event.seq
    if event.run_id is not None:
        fields["run_id"] = event.run_id
    level = logging.INFO
    message = event.type.replace(".", " ").replace("_", " ")
    if event.type.startswith("run."):
        for key in ("status", "stop_reason", "reason", "replica"):
            if data.get(key) is not None:
                fields[key] = data[key]
        error = data.get("error")
        if isinstance(error, dict):
            level = logging.ERROR
            fields["error"] = error
            message = f"{message}: {error.get('type')}: {error.get('message')}"
        elif data.get("stop_reason"):
            message = f"{message} ({data['stop_reason']})"
    elif event.type == "provider.retry":
        level = logging.WARNING
        fields.update({key: data.get(key) for key in ("attempt", "status_code", "wait_s")})
        fields["error"] = data.get("error")
        message = (
            f"provider request retried (attempt {data.get('attempt')}, status "
            f"{data.get('status_code')}, wait {data.get('wait_s')} s): {data.get('error')}"
        )
    log.log(level, message, extra=fields)


class ObservedComputer:
    """A run's computer whose actions are timed by computer kind and action type, each
    in a span of its own under the turn's."""

    def __init__(self, computer: Computer, kind: str, observer: Observer) -> None:
        self._computer = computer
        self._kind = kind
        self._observer = observer
        self.display = computer.display

    async def execute(self, action: Action) -> ActionResult:
        tracing = self._observer.tracing
        span_cm: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if tracing is not None:
            span_cm = tracing.tracer.start_as_current_span(
                f"action {action.type}",
                attributes={
                    "agent_sessions.computer": self._kind,
                    "agent_sessions.action": action.type,
                },
            )
        started = time.perf_counter()
        with span_cm:
            try:
                result = await self._computer.execute(action)
            except Exception:  # a failed action took its time too; a cancelled one did not end
                self._observe(action, started)
                raise
            self._observe(action, started)
            return result

    def _observe(self, action: Action, started: float) -> None:
        self._observer.metrics.action_seconds.labels(self._kind, action.type).observe(
            time.perf_counter() - started
        )

    async def start(self) -> None:
        await self._computer.start()

    async def screenshot(self) -> ShotImage:
        return await self._computer.screenshot()

    async def current_url(self) -> str | None:
        return await self._computer.current_url()

    async def close(self) -> None:
        await self._computer.close()

    def is_alive(self) -> bool:
        return self._computer.is_alive()
