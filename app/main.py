"""create_app(): the FastAPI application, its routers and error handlers; nothing else."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from app.api import (
    docs,
    events,
    health,
    metrics,
    runs,
    safety_checks,
    screenshots,
    sessions,
    tokens,
    viewer,
    webhooks,
)
from app.api.errors import BodySizeLimit, document_problems, install_error_handlers
from app.api.idempotency import IdempotencyKeys
from app.lifespan import make_lifespan
from app.observability.logging import REQUEST_ID_HEADER, RequestContext
from app.observability.tracing import Tracing
from app.settings import Settings, get_settings

# What a browser client sends, and what it must be able to read (SPEC v2.2).
CORS_ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    REQUEST_ID_HEADER,
]
CORS_EXPOSE_HEADERS = ["Idempotent-Replayed", "Retry-After", REQUEST_ID_HEADER]


def _operation_id(route: APIRoute) -> str:
    # Stable operation ids keep the checked-in openapi.json diffable.
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    tracing = Tracing.from_settings(settings)  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    app = FastAPI(
        title="agent-sessions",
        version="1.0.0",
        summary="Durable computer-use agent sessions over REST and Server-Sent Events.",
        lifespan=make_lifespan(settings, tracing),
        generate_unique_id_function=_operation_id,
        docs_url=None,  # app/api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(IdempotencyKeys)  # inside BodySizeLimit: it reads the body whole
    app.add_middleware(BodySizeLimit)
    app.add_middleware(RequestContext)  # a request id on every answer (a 413 too) and log line
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
    for module in (health, sessions, runs, events, safety_checks, screenshots, tokens, webhooks):
        app.include_router(module.router)
    # Pages, not API: the viewer, and the API's docs with their assets served from here.
    for module in (viewer, docs):
        app.include_router(module.router)
    # Not API: the Prometheus scrape.
    app.include_router(metrics.router)
    document_problems(app)
    if tracing is not None:
        tracing.instrument_app(app)  # spans for HTTP requests
    return app
