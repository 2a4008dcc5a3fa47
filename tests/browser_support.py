"""What every browser test needs: Debian's Chromium, or a clear verdict when it is missing."""

from __future__ import annotations

import os

import pytest

from app.settings import Settings


def require_chromium() -> str:
    """Chromium's path; a missing browser fails the test on CI and skips it elsewhere.

    CI must not go green by skipping the browser tests, while a developer
    without Chromium can still run the rest of the suite.
    """
    path = Settings().chromium_path
    if not path or not os.access(path, os.X_OK):
        message = (
            f"Chromium not found (CHROMIUM_PATH={path!r}): install Debian's `chromium` "
            "package or set CHROMIUM_PATH to run the browser tests"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
