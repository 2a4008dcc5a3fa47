"""A local OTLP/HTTP trace receiver: what a collector at OTEL_EXPORTER_OTLP_ENDPOINT
would get. It accepts `POST /v1/traces` with a protobuf ExportTraceServiceRequest (the
SDK's OTLP/HTTP exporter, uncompressed), decodes it with opentelemetry-proto's own
classes and keeps every span."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tests.fakes.http_server import (
    BackgroundServer,
    Receive,
    Reply,
    Scope,
    Send,
    read_body,
    send_reply,
)

MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL...
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """`base_url` is what OTEL_EXPORTER_OTLP_ENDPOINT names; `spans` what arrived."""

    def __init__(self) -> None:
        self._server = BackgroundServer(self._asgi, name="otlp-receiver")
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.paths: list[str] = []

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body, _ = await read_body(receive, MAX_BODY)
        self.paths.append(scope["path"])
        if scope["method"] != "POST" or scope["path"] != "/v1/traces" or body is None:
            await send_reply(send, Reply(404, [], [b""]))
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=ProtoSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            resource=resource,
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        answer = ExportTraceServiceResponse().SerializeToString()
        headers = [(b"content-type", b"application/x-protobuf")]
        await send_reply(send, Reply(200, headers, [answer]))
