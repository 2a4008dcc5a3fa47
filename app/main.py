"""create_app(): the FastAPI application, its routers and error handlers; nothing else."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from app.api import (
    docs,
    events,
    health,
    runs,
    safety_checks,
    screenshots,
    sessions,
    tokens,
    viewer,
)
from app.api.errors import BodySizeLimit, document_problems, install_error_handlers
from app.lifespan import make_lifespan
from app.settings import Settings, get_settings

# What a browser client sends, and what it must be able to read (SPEC v2.2).
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
CORS_EXPOSE_HEADERS = ["Idempotent-Replayed", "Retry-After"]


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
        docs_url=None,  # app/api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit)
    if settings.cors_origins:
        # Added last, so outermost: preflights and every answer (a 413 too) carry CORS.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=600,
        )
    for module in (health, sessions, runs, events, safety_checks, screenshots, tokens):
        app.include_router(module.router)
    # Pages, not API: the viewer, and the API's docs with their assets served from here.
    for module in (viewer, docs):
        app.include_router(module.router)
    document_problems(app)
    return app
