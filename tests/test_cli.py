"""`agent-sessions serve`'s logging: session tokens in URLs never reach the log.

The service is served with the configuration `serve` builds (uvicorn's own logging and
access log), and the access log's output is captured as it would reach stdout.
"""

from __future__ import annotations

import asyncio
import io
import logging

import httpx
import uvicorn

from app.cli import REDACTED, RedactAccessTokens, redact_access_tokens, server_config
from app.main import create_app
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


async def test_the_access_log_of_serve_never_shows_a_token(
    clean_db: str, anthropic_fake: FakeAnthropic
) -> None:
    settings = make_settings(clean_db, anthropic_fake.base_url)
    app = create_app(settings)
    config = server_config(app, "127.0.0.1", 0, settings)
    captured = io.StringIO()
    for handler in logging.getLogger("uvicorn.access").handlers:
        assert isinstance(handler, logging.StreamHandler)
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
    assert f"/v1/sessions/{sid}/events?access_token={REDACTED}&format=json" in log
    assert f"/v1/sessions/{sid}?access_token={REDACTED}&limit=1" in log
    secret = token.partition(".")[2]
    assert secret not in log and token.partition(".")[0] not in log
