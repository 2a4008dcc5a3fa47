"""A webhook receiver on 127.0.0.1, in a thread: records every POST (headers, raw body,
arrival time) and answers what its `responder` says (200 by default; a status, or a
status and a Location for redirects). `bind()` takes its port without listening (a
connection is refused, as by a receiver that is down), so a test can hand its URL to
the service before `start()`."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_dGhlIG90aGVyIHRlbmFudCdzIHNlY3JldA=="


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    def verify(self, secret: str = SECRET) -> dict[str, Any]:
        """The body, once Standard Webhooks' own verifier accepts the signature."""
        value: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return value


# (received so far, including this one) -> status, or (status, Location)
Responder = Callable[[Received, list[Received]], int | tuple[int, str]]


class _Server(ThreadingHTTPServer):
    """Also keeps its open connections, so that stopping it cuts the keep-alive ones
    (a receiver that is down answers nothing, on old connections either)."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        # The answer's headers and body are two writes: without this, Nagle holds the
        # second until the client's delayed ACK (40 ms).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away (the service stopping, a receiver going down under its
        # keep-alive connections) is not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class WebhookReceiver:
    def __init__(self, responder: Responder | None = None) -> None:
        self.port = 0
        self.responder: Responder = responder or (lambda request, so_far: 200)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def bind(self, port: int = 0) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                request = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                with receiver._lock:
                    receiver.received.append(request)
                    so_far = list(receiver.received)
                answer = receiver.responder(request, so_far)
                status, location = answer if isinstance(answer, tuple) else (answer, None)
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", port), Handler, bind_and_activate=False)
        self._server.server_bind()
        self.port = self._server.server_address[1]
        return self

    def start(self) -> WebhookReceiver:
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._server.server_activate()  # listen() from now on
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
            self._server.cut_connections()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)
