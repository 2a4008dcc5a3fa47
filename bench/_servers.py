"""The server side of the SSE benchmarks, run as a subprocess so that the clients
(the benchmark script itself) never share a process or an event loop with it.

    .venv/bin/python -m bench._servers service  --database-url URL
    .venv/bin/python -m bench._servers baseline

Prints `PORT <n>` once listening on 127.0.0.1; SIGINT or SIGTERM stops it.

`service`: the real app (`create_app`, fake computer enabled, fake Anthropic
server) under uvicorn on uvloop, as `agent-sessions serve` runs it, plus two
bench-only routes added to this process's app object only (nothing in app/):
`POST /bench/publish` appends events through the service's own EventLog at a
clock-paced rate (so they are committed, then published by the Broker and
streamed by the real `GET /v1/sessions/{sid}/events`), and `POST /bench/fill`
appends a block of events as fast as the EventLog takes them.

`baseline`: a bare Starlette app under the same uvicorn serving the same SSE
frames (sse-starlette, same event JSON) fanned out from memory, with the same
`POST /v1/sessions` and `POST /bench/publish` shapes, so one client code drives both.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.lifespan import tune_gc_for_serving

TEXT = "x" * 64
# emit(session_id, data) -> None, or an awaitable that completes when committed
Emit = Callable[[str, dict[str, Any]], Awaitable[Any] | None]


async def publish(emit: Emit, sessions: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: `rate` events/s per session for `seconds`, paced on a 1 ms clock
    (not by commits); round-robin over sessions. Each event carries `t`, the
    CLOCK_MONOTONIC time of its publish, shared with the client process."""
    total_rate = rate * len(sessions)
    total = int(total_rate * seconds)
    pending: set[asyncio.Future[Any]] = set()
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * total_rate) + 1)
        while sent < due:
            result = emit(sessions[sent % len(sessions)], {"text": TEXT, "t": time.monotonic()})
            if result is not None:
                future = asyncio.ensure_future(result)
                pending.add(future)
                future.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(0.001)
    publish_s = time.monotonic() - start
    await asyncio.gather(*pending)
    return {
        "published": sent,
        "publish_s": publish_s,
        "committed_s": time.monotonic() - start,
    }


def service_app(database_url: str, anthropic_url: str) -> FastAPI:
    from app.lifespan import Services
    from app.main import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url, anthropic_url))

    def services(request: Request) -> Services:
        found: Services = request.app.state.services
        return found

    async def bench_publish(request: Request) -> JSONResponse:
        body = await request.json()
        log = services(request).log

        def emit(sid: str, data: dict[str, Any]) -> Awaitable[Any]:
            return log.append(sid, None, [("assistant.message", data)])

        return JSONResponse(await publish(emit, body["sessions"], body["rate"], body["seconds"]))

    async def bench_fill(request: Request) -> JSONResponse:
        body = await request.json()
        log = services(request).log
        sid, count, per_append = body["session"], body["count"], body.get("per_append", 100)
        for start in range(0, count, per_append):
            n = min(per_append, count - start)
            await log.append(sid, None, [("assistant.message", {"text": TEXT})] * n)
        return JSONResponse({"appended": count})

    app.add_route("/bench/publish", bench_publish, methods=["POST"])
    app.add_route("/bench/fill", bench_fill, methods=["POST"])
    return app


def baseline_app() -> Starlette:
    subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
    seqs: dict[str, int] = {}
    ids = itertools.count(1)

    async def create_session(_request: Request) -> JSONResponse:
        sid = f"ses_{next(ids)}"
        subscribers[sid] = set()
        seqs[sid] = 0
        return JSONResponse({"id": sid}, status_code=201)

    def emit(sid: str, data: dict[str, Any]) -> None:
        seqs[sid] += 1
        event = {
            "seq": seqs[sid],
            "type": "assistant.message",
            "session_id": sid,
            "run_id": None,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        }
        for queue in subscribers[sid]:
            queue.put_nowait(event)

    async def events(request: Request) -> EventSourceResponse:
        sid = request.path_params["sid"]
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        subscribers[sid].add(queue)

        async def body() -> AsyncIterator[ServerSentEvent]:
            try:
                yield ServerSentEvent(retry=2000)
                while True:
                    event = await queue.get()
                    yield ServerSentEvent(
                        data=json.dumps(event, separators=(",", ":")),
                        event=event["type"],
                        id=str(event["seq"]),
                    )
            finally:
                subscribers[sid].discard(queue)

        return EventSourceResponse(body(), ping=15)

    async def bench_publish(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(await publish(emit, body["sessions"], body["rate"], body["seconds"]))

    return Starlette(
        routes=[
            Route("/v1/sessions", create_session, methods=["POST"]),
            Route("/v1/sessions/{sid}/events", events),
            Route("/bench/publish", bench_publish, methods=["POST"]),
        ]
    )


async def serve(kind: str, database_url: str | None) -> None:
    app: Any
    if kind == "service":
        from app.db.engine import migrate
        from tests.fakes.anthropic_server import FakeAnthropic

        assert database_url is not None
        await migrate(database_url)
        fake = FakeAnthropic().start()
        app = service_app(database_url, fake.base_url)
    else:
        fake = None
        app = baseline_app()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", loop="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("uvicorn stopped during start-up")
        await asyncio.sleep(0.01)
    tune_gc_for_serving()  # both kinds, as `agent-sessions serve` does after start-up
    print(f"PORT {server.servers[0].sockets[0].getsockname()[1]}", flush=True)
    await task
    if fake is not None:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["service", "baseline"])
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.kind, args.database_url))
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the signal it stopped on


if __name__ == "__main__":
    main()
