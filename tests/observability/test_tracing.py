"""Traces (SPEC v2.4): with OTEL_EXPORTER_OTLP_ENDPOINT set, a run exports its span tree
(run -> turn -> model call / action, the provider's HTTP request under its model call,
and the API's HTTP requests) over OTLP/HTTP to a local receiver; unset, nothing of the
OpenTelemetry SDK is even imported."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from tests.api.helpers import create_session, wait_for_run
from tests.conftest import ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[2]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id]


async def test_a_run_exports_its_span_tree(clean_db: str, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.strict = True
    anthropic_fake.enqueue(
        tool_use_message(computer_call("left_click", coordinate=[100, 200])),
        text_message("Done."),
    )
    with OtlpReceiver() as receiver:
        settings = make_settings(
            clean_db, anthropic_fake.base_url, otel_exporter_otlp_endpoint=receiver.base_url
        )
        async with ServiceServer(settings) as service:
            assert service.services.observer.tracing is not None
            session = await create_session(service.client, task="Click it")
            sid, rid = session["id"], session["active_run_id"]
            run = await wait_for_run(service.client, sid, rid)
            assert run["status"] == "completed"
        # Stopped: the service exported what was still batched.
        assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
        spans = receiver.spans
        assert set(receiver.paths) == {"/v1/traces"}

    (run_span,) = [s for s in spans if s.name == "run"]
    assert run_span.attributes["agent_sessions.run_id"] == rid
    assert run_span.attributes["agent_sessions.session_id"] == sid
    assert run_span.attributes["gen_ai.request.model"] == "claude-sonnet-4-6"
    assert run_span.resource["service.name"] == "agent-sessions"
    turns = children(spans, run_span)
    assert [t.name for t in turns] == ["turn", "turn"]
    first, second = sorted(turns, key=lambda t: t.attributes["agent_sessions.turn"])
    assert sorted(s.name for s in children(spans, first)) == [
        "action click",
        "chat claude-sonnet-4-6",
    ]
    assert [s.name for s in children(spans, second)] == ["chat claude-sonnet-4-6"]
    (action,) = [s for s in children(spans, first) if s.name == "action click"]
    assert action.attributes["agent_sessions.computer"] == "fake"
    # The SDK's HTTP request to the provider, under its model call.
    for turn in (first, second):
        (chat,) = [s for s in children(spans, turn) if s.name.startswith("chat")]
        (request,) = children(spans, chat)
        assert request.kind == "CLIENT" and request.name == "POST"
        url = request.attributes.get("url.full") or request.attributes.get("http.url")
        assert str(url).endswith("/v1/messages")
    # The API's own requests.
    server = [s for s in spans if s.kind == "SERVER"]
    assert "POST /v1/sessions" in {s.name for s in server}
    assert all(s.trace_id == run_span.trace_id for s in [*turns, action])


async def test_without_the_endpoint_nothing_is_set_up(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.enqueue(text_message("Hello."))
    async with ServiceServer(make_settings(clean_db, anthropic_fake.base_url)) as service:
        assert service.services.observer.tracing is None
        assert not getattr(service.app, "_is_instrumented_by_opentelemetry", False)
        session = await create_session(service.client, task="Say hello")
        assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
        await wait_for_run(service.client, session["id"], session["active_run_id"])
    # A fresh process: building the app imports none of the SDK, exporters or instrumentations.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = (
        "import sys\n"
        "from app.main import create_app\n"
        "from app.settings import Settings\n"
        "create_app(Settings(database_url='sqlite+aiosqlite://'))\n"
        "prefixes = ('opentelemetry.sdk', 'opentelemetry.exporter', "
        "'opentelemetry.instrumentation')\n"
        "print(sorted(m for m in sys.modules if m.startswith(prefixes)))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "[]"
