"""GET /metrics: the Prometheus text format (SPEC v2.4), for an operator's scraper.

Not part of the API's OpenAPI document (it is not JSON and not for API clients). When
METRICS_TOKEN is set it needs `Authorization: Bearer <METRICS_TOKEN>`; unset, it is
open (API keys do not apply: a scraper is not a tenant).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from app.api.errors import Problem
from app.lifespan import Services
from app.observability.metrics import CONTENT_TYPE

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    # Not ServicesDep: a sync dependency runs in the thread pool, a hop per scrape.
    services: Services = request.app.state.services
    token = services.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Problem(
                401,
                "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>.",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return Response(services.observer.metrics.render(), media_type=CONTENT_TYPE)
