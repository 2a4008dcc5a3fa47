"""OpenTelemetry traces, only when OTEL_EXPORTER_OTLP_ENDPOINT is set (SPEC v2.4).

Unset, `Tracing.from_settings` returns None and nothing is imported, installed or
started: no tracer provider, no middleware, no patched httpx. Set, the service exports
over OTLP/HTTP (protobuf) to `<endpoint>/v1/traces`, with the exporter's other
standard variables (OTEL_EXPORTER_OTLP_HEADERS...) read by the exporter itself:

- HTTP requests: opentelemetry-instrumentation-fastapi, on this app only (its own
  tracer provider, not the global one; probes and /metrics are left out, and so are
  the per-message send/receive spans an SSE stream would multiply);
- outgoing HTTP: opentelemetry-instrumentation-httpx, which patches httpx (Kernel,
  webhooks) and httpx2 (the anthropic and openai SDKs' HTTP client) for the whole
  process while the service runs;
- runs, turns, model calls and actions: spans of the service's own, opened by
  app/observability/observer.py, nested run -> turn -> model call / action, with the
  provider's HTTP request under its model call.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from app.settings import Settings

SERVICE_NAME = "agent-sessions"
UNTRACED_URLS = "/healthz,/readyz,/metrics"


def traces_endpoint(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; traces go to /v1/traces
    (as the SDK does with that variable), unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    names the full URL."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        endpoint.rstrip("/") + "/v1/traces"
    )


class Tracing:
    """The service's tracer provider and the instrumentations that feed it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("app.observability")
        self._instrumented: list[Any] = []  # the instrumentors this service turned on

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing | None:
        if not settings.otel_exporter_otlp_endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_endpoint(settings.otel_exporter_otlp_endpoint))
        return cls.with_exporter(exporter, replica=settings.replica_id)

    @classmethod
    def with_exporter(cls, exporter: SpanExporter, *, replica: str) -> Tracing:
        """Spans batched to `exporter` (the OTLP one, or a test's)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, are merged in by create.
        attributes = {"service.instance.id": replica}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = SERVICE_NAME
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def instrument_app(self, app: FastAPI) -> None:
        """Spans for the app's HTTP requests; before the app first runs (it wraps the
        middleware stack when that is built)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            excluded_urls=UNTRACED_URLS,
            exclude_spans=["receive", "send"],
        )

    def start(self) -> None:
        """Spans for outgoing httpx and httpx2 requests, from the service's start to its
        stop (a process serves one app; a second one traced at once would find the
        patch taken and leave it)."""
        from opentelemetry.instrumentation import httpx as instrumentation

        kinds = [instrumentation.HTTPXClientInstrumentor]
        if hasattr(instrumentation, "HTTPX2ClientInstrumentor"):  # when httpx2 is installed
            kinds.append(instrumentation.HTTPX2ClientInstrumentor)
        for kind in kinds:
            instrumentor = kind()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=self.provider)
                self._instrumented.append(instrumentor)

    def shutdown(self) -> None:
        """Undo the patches and export what is left."""
        while self._instrumented:
            self._instrumented.pop().uninstrument()
        self.provider.shutdown()
