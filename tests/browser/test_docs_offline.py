"""Swagger UI (`/docs`) and ReDoc (`/redoc`) render in Chromium with every request to
anything but the service aborted: their assets are served by the service itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser.support import offline_except, page_errors
from tests.conftest import Service, ServiceServer, make_settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.processes import SQLITE_PASS_ONLY

pytestmark = [pytest.mark.browser, SQLITE_PASS_ONLY]


@pytest.fixture
async def service(clean_db: str, anthropic_fake: FakeAnthropic) -> AsyncIterator[Service]:
    async with ServiceServer(make_settings(clean_db, anthropic_fake.base_url)) as svc:
        yield svc


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_api_docs_render_with_no_internet(
    service: Service, browser: Browser, path: str
) -> None:
    context = await browser.new_context()
    try:
        offline = await offline_except(context, service.url)
        page = await context.new_page()
        errors = page_errors(page)
        response = await page.goto(service.url + path)
        assert response is not None and response.status == 200
        # Both list the API's operations once the spec is loaded and rendered.
        await expect(
            page.get_by_text("Create a session; with").filter(visible=True).first
        ).to_be_visible(timeout=20_000)
        await expect(
            page.get_by_text("Issue a session token for a browser").filter(visible=True).first
        ).to_be_visible()
        assert offline.blocked == []
        # ReDoc always tries to show Redocly's logo from a CDN: the page's CSP stops it
        # before any request is made (ReDoc then leaves the logo out). Nothing else fails.
        assert [e for e in errors if "cdn.redoc.ly/redoc/logo-mini.svg" not in e] == []
    finally:
        await context.close()
