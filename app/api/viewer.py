"""The viewer: `GET /viewer/sessions/{sid}`, a page to watch one session live and, with a
control token, act on it (SPEC v2.2). The page uses the same SSE stream and REST endpoints
as any client; this module only serves its files, telling the page its session and scope.

Served with a strict Content-Security-Policy (scripts and styles only from this origin,
no inline script), `frame-ancestors 'none'` (no clickjacking of its buttons) and
`Referrer-Policy: no-referrer` (the token is in the page's URL).
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse, Response

from app.api.errors import Problem
from app.deps import ViewerAccess

router = APIRouter(include_in_schema=False)

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
}
ASSET_TYPES = {"viewer.js": "text/javascript", "viewer.css": "text/css"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str  # a content hash: the page names it, so an asset may be cached for good


@cache
def _asset(name: str) -> Asset:
    body = (resources.files("app.viewer") / "static" / name).read_bytes()
    return Asset(body, ASSET_TYPES[name], hashlib.sha256(body).hexdigest()[:16])


@cache
def _template() -> str:
    return (resources.files("app.viewer") / "static" / "index.html").read_text("utf-8")


def render_page(session_id: str, can_control: bool) -> str:
    values = {
        "session_id": session_id,
        "scope": "control" if can_control else "read",
        "css_version": _asset("viewer.css").version,
        "js_version": _asset("viewer.js").version,
    }
    page = _template()
    for name, value in values.items():
        page = page.replace("{{" + name + "}}", html.escape(value, quote=True))
    return page


@router.get("/viewer/sessions/{sid}", response_class=HTMLResponse)
async def viewer_page(access: ViewerAccess) -> HTMLResponse:
    session, principal = access
    return HTMLResponse(
        render_page(session.id, principal.can_control),
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


@router.get("/viewer/assets/{name}")
async def viewer_asset(name: Annotated[str, Path(max_length=32)]) -> Response:
    if name not in ASSET_TYPES:
        raise Problem(404, f"No viewer asset {name}.")
    asset = _asset(name)
    return Response(
        asset.body,
        media_type=asset.media_type,
        headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"},
    )
