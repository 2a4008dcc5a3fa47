"""Shared by the KernelComputer tests: the service's own client factory pointed at a FakeKernel."""

from __future__ import annotations

from typing import Any

from kernel import AsyncKernel

from app.computers.base import Display
from app.computers.kernel_api import kernel_client
from app.settings import Settings
from tests.fakes.kernel_server import FakeKernel

DISPLAY = Display(1280, 800)
# The fake starts every browser's cursor in the middle of its screen.
CURSOR = (DISPLAY.width // 2, DISPLAY.height // 2)


def settings_for(fake: FakeKernel, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"kernel_api_key": fake.api_key, "kernel_base_url": fake.base_url}
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


def client_for(fake: FakeKernel, **overrides: Any) -> AsyncKernel:
    """A client built the way the service builds it (a new one has a fresh route cache)."""
    client = kernel_client(settings_for(fake, **overrides))
    assert client is not None
    return client
