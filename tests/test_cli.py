"""`agent-sessions serve`'s logging: session tokens in URLs never reach the log.

The service is served with the logging and the configuration `serve` builds (one
handler on the root logger, to which uvicorn's access log propagates), and that
handler's output is captured as it would reach stderr.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from app.cli import (
    REDACTED,
    RedactAccessTokens,
    configure_service_logging,
    redact_access_tokens,
    server_config,
)
from app.main import create_app
from app.observability.logging import ServiceLogHandler
from tests.api.helpers import FAKE_COMPUTER
from tests.conftest import make_settings
from tests.fakes.anthropic_server import FakeAnthropic


def test_redact_access_tokens() -> None:
    assert redact_access_tokens("GET /v1/x?access_token=tok_1.abc HTTP/1.1") == (
        f"GET /v1/x?access_token={REDACTED} HTTP/1.1"
    )
    assert redact_access_tokens("/e?after=3&access_token=tok_1.a-b_c&format=json") == (
        f"/e?after=3&access_token={REDACTED}&format=json"
    )
    assert redact_access_tokens("/e?token=visible") == "/e?token=visible"
    # Starlette decodes parameter names: access%5Ftoken authenticates too, and the
    # secret of anything shaped like a token is blanked wherever it appears.
    token_id = "tok_" + "0123456789abcdef" * 1 + "0123456789ab"
    assert redact_access_tokens(f"/e?access%5Ftoken={token_id}.s3cr-et_X&x=1") == (
        f"/e?access%5Ftoken={token_id}.{REDACTED}&x=1"
    )
    assert redact_access_tokens(f"/e?access%5Ftoken={token_id}%2Es3cret") == (
        f"/e?access%5Ftoken={token_id}%2E{REDACTED}"
    )


def test_the_filter_rewrites_message_and_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/s?access_token=tok_1.secret", "1.1", 200),
        None,
    )
    assert RedactAccessTokens().filter(record)
    assert "secret" not in record.getMessage()
    assert f"access_token={REDACTED}" in record.getMessage()


@pytest.fixture
def serve_logging() -> Iterator[None]:
    """The logging `serve` configures, undone afterwards (it changes this process's root
    logger and uvicorn's loggers)."""
    root = logging.getLogger()
    level = root.level
    saved = {
        name: (logger.handlers[:], logger.propagate, logger.level)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        if (logger := logging.getLogger(name))
    }
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if isinstance(h, ServiceLogHandler)]:
            root.removeHandler(handler)
        root.setLevel(level)
        for name, (handlers, propagate, logger_level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate, logger.level = propagate, logger_level


@pytest.mark.usefixtures("serve_logging")
async def test_the_access_log_of_serve_never_shows_a_token(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, anthropic_fake.base_url, log_format="json")
    configure_service_logging(settings)
    app = create_app(settings)
    config = server_config(app, "127.0.0.1", 0, settings)
    captured = io.StringIO()
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, ServiceLogHandler)]
    handler.setStream(captured)  # the handler `serve` writes to, filter and all
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped during start-up"
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            created = await client.post(
                "/v1/sessions", json={"provider": "anthropic", "computer": FAKE_COMPUTER}
            )
            sid = created.json()["id"]
            issued = (await client.post(f"/v1/sessions/{sid}/tokens")).json()
            token = issued["token"]
            read = await client.get(issued["events_url"] + "&format=json")
            assert read.status_code == 200
            refused = await client.get(f"/v1/sessions/{sid}?access_token={token}x&limit=1")
            assert refused.status_code == 401
    finally:
        server.should_exit = True
        await task
    log = captured.getvalue()
    # One JSON object a line; the access lines carry their request's fields.
    lines = [json.loads(line) for line in log.splitlines()]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert {line["path"] for line in access} >= {
        f"/v1/sessions/{sid}/events?access_token={REDACTED}&format=json",
        f"/v1/sessions/{sid}?access_token={REDACTED}&limit=1",
    }
    assert all(line["request_id"].startswith("req_") for line in access)
    assert f"/v1/sessions/{sid}/events?access_token={REDACTED}&format=json" in log
    assert f"/v1/sessions/{sid}?access_token={REDACTED}&limit=1" in log
    secret = token.partition(".")[2]
    assert secret not in log and token.partition(".")[0] not in log
