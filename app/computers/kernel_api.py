"""The service's Kernel client and the translation of its failures into ComputerError."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import httpx
import kernel
from kernel import AsyncKernel

from app.computers.base import ComputerError
from app.settings import Settings

SDK_RETRIES = 2  # for the calls that are safe to repeat (see KernelComputer)
REQUEST_TIMEOUT_S = 60.0


def kernel_client(settings: Settings) -> AsyncKernel | None:
    """The service's one Kernel client, or None when KERNEL_API_KEY is not set."""
    if not settings.kernel_api_key:
        return None
    return AsyncKernel(
        api_key=settings.kernel_api_key,
        # None lets the SDK fall back to KERNEL_BASE_URL, then to Kernel's production API.
        base_url=settings.kernel_base_url or None,
        max_retries=SDK_RETRIES,
        timeout=REQUEST_TIMEOUT_S,
    )


def wheel_units(notches: float) -> int:
    """Wheel notches -> the whole xdotool wheel clicks Kernel's scroll takes.

    Rounded half away from zero, and never to 0 when the model asked for some
    scrolling (OpenAI pixel scrolls can be fractions of a notch).
    """
    if notches == 0:
        return 0
    units = max(1, math.floor(abs(notches) + 0.5))
    return units if notches > 0 else -units


def _detail(exc: kernel.APIStatusError) -> str:
    # Kernel's error envelope is {"code": ..., "message": ...}.
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message


def translate(exc: kernel.APIError, what: str, base_url: object) -> ComputerError:
    """An SDK error -> a ComputerError the model (and the run's error) can make sense of."""
    if isinstance(exc, kernel.AuthenticationError):
        return ComputerError(f"Kernel rejected KERNEL_API_KEY (HTTP 401) trying to {what}")
    if isinstance(exc, kernel.APIStatusError):
        return ComputerError(f"Kernel could not {what}: HTTP {exc.status_code}: {_detail(exc)}")
    if isinstance(exc, kernel.APITimeoutError):
        return ComputerError(f"Kernel did not answer in time trying to {what}")
    if isinstance(exc, kernel.APIConnectionError):
        return ComputerError(f"Could not reach Kernel at {base_url} to {what}")
    return ComputerError(f"Kernel could not {what}: {exc}")


@contextlib.contextmanager
def kernel_errors(
    what: str, base_url: object, on_missing: Callable[[], ComputerError] | None = None
) -> Iterator[None]:
    """Raise ComputerError for any SDK or transport failure inside the block.

    `on_missing` builds the error for a 404 (the browser is gone); without it a
    404 is reported like any other status.
    """
    try:
        yield
    except kernel.NotFoundError as exc:
        raise (on_missing() if on_missing else translate(exc, what, base_url)) from exc
    except kernel.APIError as exc:
        raise translate(exc, what, base_url) from exc
    except httpx.HTTPError as exc:  # a response body that broke off while being read
        raise ComputerError(f"Kernel's answer broke off trying to {what}: {exc}") from exc
