"""Fixtures of the browser-client tests: the strict fake Anthropic API and one test-side
Chromium per module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.browser.support import launch_chromium
from tests.fakes.anthropic_server import FakeAnthropic


@pytest.fixture
def strict_fake(anthropic_fake: FakeAnthropic) -> FakeAnthropic:
    # Strict: a request the script did not plan for fails the run instead of passing quietly.
    anthropic_fake.strict = True
    return anthropic_fake


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium
