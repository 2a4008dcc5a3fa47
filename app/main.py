"""create_app(): the FastAPI application, its routers and error handlers; nothing else."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.api import events, health, runs, safety_checks, screenshots, sessions
from app.api.errors import BodySizeLimit, document_problems, install_error_handlers
from app.lifespan import make_lifespan
from app.settings import Settings, get_settings


def _operation_id(route: APIRoute) -> str:
    # Stable operation ids keep the checked-in openapi.json diffable.
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="agent-sessions",
        version="1.0.0",
        summary="Durable computer-use agent sessions over REST and Server-Sent Events.",
        lifespan=make_lifespan(settings),
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit)
    for module in (health, sessions, runs, events, safety_checks, screenshots):
        app.include_router(module.router)
    document_problems(app)
    return app
