"""Fixtures shared by the API tests."""

from __future__ import annotations

import pytest

from tests.fakes.anthropic_server import FakeAnthropic


@pytest.fixture
def strict_fake(anthropic_fake: FakeAnthropic) -> FakeAnthropic:
    # Strict: a request the script did not plan for fails the run instead of passing quietly.
    anthropic_fake.strict = True
    return anthropic_fake
