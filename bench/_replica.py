"""`agent-sessions serve` plus one bench-only route, for bench.replicas (not a benchmark itself).

    .venv/bin/python -m bench._replica --host 127.0.0.1 --port N

Runs `app.cli.main(["serve", ...])` (migrations, uvicorn, the drain on SIGTERM, the
GC tuning: everything `agent-sessions serve` does, with the settings from the
environment) after wrapping `create_app` so that this process's app object also
has `POST /bench/publish` (bench._servers.publish: clock-paced appends through the
service's own EventLog, each event carrying its CLOCK_MONOTONIC publish time `t`).
Nothing in app/ changes; the route exists in this process only.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

import app.main as app_main
from app.cli import main
from app.settings import Settings
from bench._servers import publish

_create_app = app_main.create_app


def create_app(settings: Settings | None = None) -> FastAPI:
    application = _create_app(settings)

    async def bench_publish(request: Request) -> JSONResponse:
        body = await request.json()
        log = request.app.state.services.log

        def emit(sid: str, data: dict[str, Any]) -> Awaitable[Any]:
            return log.append(sid, None, [("assistant.message", data)])  # type: ignore[no-any-return]

        return JSONResponse(await publish(emit, body["sessions"], body["rate"], body["seconds"]))

    application.add_route("/bench/publish", bench_publish, methods=["POST"])
    return application


if __name__ == "__main__":
    app_main.create_app = create_app  # `serve` imports it from app.main when it starts
    sys.exit(main(["serve", *sys.argv[1:]]))
