"""The viewer page and the offline API docs as HTTP resources: who may open the viewer and
which scope it is told, its security headers, and that neither it nor /docs and /redoc
name anything outside the service. (What the pages do is tested in real Chromium in
tests/browser/.)"""

from __future__ import annotations

import re

import httpx

from app.api.viewer import render_page
from tests.api.helpers import create_session
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic

KEY = {"Authorization": "Bearer key-a"}
SCOPE = re.compile(r'<meta name="agent-sessions-scope" content="(\w+)">')


def scope_of(response: httpx.Response) -> str:
    found = SCOPE.search(response.text)
    assert found, response.text
    return found.group(1)


def assert_local_only(text: str) -> None:
    """No absolute URL at all: every script, style and image comes from the service."""
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), text[:500]


async def test_the_viewer_is_served_with_a_strict_policy_and_local_files_only(
    service: Service,
) -> None:
    session = await create_session(service.client)
    page = await service.client.get(f"/viewer/sessions/{session['id']}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    # Without API_KEYS every request is allowed, so the page offers the controls.
    assert scope_of(page) == "control"
    assert f'content="{session["id"]}"' in page.text
    # No inline script: each <script> has a src on this origin, and so do the styles.
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts and all(re.search(r'src="/viewer/assets/viewer\.js\?v=\w+"', s) for s in scripts)
    assert "<style" not in page.text and " style=" not in page.text
    assert_local_only(page.text)
    for name, media_type in (("viewer.js", "text/javascript"), ("viewer.css", "text/css")):
        asset = await service.client.get(f"/viewer/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert_local_only(asset.text)
    missing = await service.client.get("/viewer/assets/other.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    nobody = await service.client.get("/viewer/sessions/ses_missing")
    assert nobody.status_code == 404


async def test_who_may_open_the_viewer_and_the_scope_it_is_told(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, anthropic_fake.base_url, api_keys="key-a:a,key-b:b")
    async with (
        ServiceServer(settings) as svc,
        httpx.AsyncClient(base_url=svc.url, headers=KEY) as keyed,
    ):
        c = svc.client
        sid = (await create_session(keyed))["id"]
        other = (await create_session(keyed))["id"]
        tokens = {}
        for scope in ("read", "control"):
            made = await c.post(f"/v1/sessions/{sid}/tokens", json={"scope": scope}, headers=KEY)
            assert made.status_code == 201, made.text
            tokens[scope] = made.json()
        viewer = f"/viewer/sessions/{sid}"

        # The link a token comes with opens the page, told its scope.
        for scope, token in tokens.items():
            assert token["viewer_url"].startswith(viewer + "?access_token=")
            page = await c.get(token["viewer_url"])
            assert page.status_code == 200 and scope_of(page) == scope
            # The token is never written into the page (it stays in the URL only).
            assert token["token"] not in page.text
        # An API key (a Bearer header: curl, not a link) gets the controls.
        assert scope_of(await c.get(viewer, headers=KEY)) == "control"
        # No credential, a wrong one, another tenant, or another session's page.
        assert (await c.get(viewer)).status_code == 401
        assert (await c.get(viewer, params={"access_token": "tok_x.nope"})).status_code == 401
        assert (await c.get(viewer, headers={"Authorization": "Bearer key-b"})).status_code == 404
        read = tokens["read"]["token"]
        assert (
            await c.get(f"/viewer/sessions/{other}", params={"access_token": read})
        ).status_code == 404
        # Revoked: the link stops working.
        assert (await c.delete(f"/v1/sessions/{sid}/tokens", headers=KEY)).status_code == 204
        assert (await c.get(tokens["read"]["viewer_url"])).status_code == 401


def test_the_page_escapes_what_it_is_told() -> None:
    page = render_page('ses_"><script>alert(1)</script>', can_control=False)
    assert "<script>alert(1)" not in page
    assert 'content="ses_&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert '<meta name="agent-sessions-scope" content="read">' in page


async def test_the_api_docs_and_their_assets_come_from_the_service(service: Service) -> None:
    for path, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")),
        ("/redoc", ("redoc.standalone.js", "favicon.png")),
    ):
        page = await service.client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert_local_only(page.text)
        for name in assets:
            assert f'"/docs/assets/{name}"' in page.text
            asset = await service.client.get(f"/docs/assets/{name}")
            assert asset.status_code == 200 and len(asset.content) > 1000
    assert (await service.client.get("/docs/assets/..%2F..%2Fmain.py")).status_code == 404
    assert (await service.client.get("/docs/assets/nope.js")).status_code == 404
    # Pages, not API: neither the viewer nor the docs are operations of the API.
    paths = (await service.client.get("/openapi.json")).json()["paths"]
    assert not any(p.startswith(("/viewer", "/docs", "/redoc")) for p in paths)
