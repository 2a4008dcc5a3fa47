"""The `agent-sessions` command: `serve` (migrate, then run the API) and `migrate`."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from app.db.engine import migrate
from app.db.process_lock import ProcessLockError, acquire_sqlite_lock
from app.observability.logging import configure_logging
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Extra seconds uvicorn gives open connections after the runs' own grace period:
# a backstop so a stuck client cannot hold a shutdown open forever.
SHUTDOWN_SLACK_S = 5


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # Any other name may resolve to a public address: treat it as public.
        return False


def auth_refusal(settings: Settings, host: str) -> str | None:
    """Why the service must not listen on `host` with these settings, or None if it may."""
    try:
        keys = settings.tenant_keys
    except ValueError as exc:
        return f"invalid API_KEYS: {exc}"
    if keys or settings.allow_no_auth or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without authentication: no API_KEYS are set. "
        "Set API_KEYS=key1:tenantA[,key2:tenantB], or ALLOW_NO_AUTH=true to serve "
        "without keys on a non-loopback address."
    )


def prices_refusal(settings: Settings) -> str | None:
    """Why MODEL_PRICES_FILE cannot be used, or None."""
    from app.observability.prices import PriceFileError, PriceTable

    try:
        PriceTable.load(settings.model_prices_file)
    except PriceFileError as exc:
        return str(exc)
    return None


_ACCESS_TOKEN = re.compile(r"(access_token=)[^&\s\"'#]+")
REDACTED = "[redacted]"


# Whatever carries it (a percent-encoded parameter name, a header echoed in a
# message): the secret part of anything shaped like a session token.
_TOKEN_SECRET = re.compile(r"(tok_[0-9a-f]{28}(?:\.|%2[Ee]))[A-Za-z0-9_\-%]+")


def redact_access_tokens(text: str) -> str:
    text = _ACCESS_TOKEN.sub(rf"\g<1>{REDACTED}", text)
    return _TOKEN_SECRET.sub(rf"\g<1>{REDACTED}", text)


class RedactAccessTokens(logging.Filter):
    """Blanks the value of every `access_token` query parameter in a record: session
    tokens travel in URLs (EventSource, viewer links), and uvicorn's access log writes
    each request's path with its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_access_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_arg(arg) for key, arg in record.args.items()}
        return True


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact_access_tokens(arg)
    # Not only strings: httpx logs its requests' URLs as httpx.URL objects.
    text = str(arg) if not isinstance(arg, (int, float)) else ""
    return redact_access_tokens(text) if "access_token=" in text or "tok_" in text else arg


def install_log_redaction() -> None:
    """Put the filter on the handlers of the root logger and uvicorn's loggers (a
    handler's filter also sees the records that propagate to it)."""
    redaction = RedactAccessTokens()
    for name in (None, "uvicorn", "uvicorn.access", "uvicorn.error"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactAccessTokens) for f in handler.filters):
                handler.addFilter(redaction)


def configure_service_logging(settings: Settings) -> None:
    """The log of `serve`: one handler on the root logger (JSON lines, or text on a
    terminal; LOG_FORMAT decides), to which uvicorn's loggers propagate, with the
    access-token redaction on it."""
    configure_logging(settings.log_format, settings.log_level, settings.replica_id)
    install_log_redaction()


def server_config(app: FastAPI, host: str, port: int, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration of `serve`, without a logging configuration of its own:
    its loggers (the access log too) write through the service's handler."""
    import uvicorn  # imported here so `migrate` does not pay for it

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + SHUTDOWN_SLACK_S,
        log_config=None,
    )
    install_log_redaction()
    return config


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Checked before migrating, so a misconfigured start changes nothing.
    problem = auth_refusal(settings, args.host) or prices_refusal(settings)
    if problem is not None:
        print(f"agent-sessions: error: {problem}", file=sys.stderr)
        return 2
    # SQLite serves one process (SPEC v2.1): before anything opens the database, take
    # its lock, held until this process ends (the kernel drops it even on SIGKILL).
    try:
        sqlite_lock = acquire_sqlite_lock(settings.database_url)
    except ProcessLockError as exc:
        print(f"agent-sessions: error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_server(args, settings)
    finally:
        if sqlite_lock is not None:
            sqlite_lock.release()


def _run_server(args: argparse.Namespace, settings: Settings) -> int:
    # Every record (the service's, uvicorn's, the access log), each naming the replica
    # that wrote it.
    configure_service_logging(settings)
    asyncio.run(migrate(settings.database_url))
    logging.getLogger("app.cli").info("database migrated to head (%s)", _head_label())

    import uvicorn  # imported here so `migrate` does not pay for it

    from app.lifespan import tune_gc_for_serving
    from app.main import create_app

    app = create_app(settings)

    class DrainingServer(uvicorn.Server):
        """uvicorn drains HTTP connections before the lifespan shutdown runs; the
        service must stop taking runs (503) and let runs stop at their next step
        boundary from the moment the signal arrives, not after that drain."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            tune_gc_for_serving()  # after the lifespan's start-up: its objects live on

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            services = getattr(app.state, "services", None)
            if services is not None:
                services.begin_shutdown()
            super().handle_exit(sig, frame)

    config = server_config(app, args.host, args.port, settings)
    # After its graceful shutdown uvicorn re-raises the SIGTERM to the handler that was
    # there before it; Python's default would then kill the process (exit 143) although
    # the drain succeeded. With this no-op one a drained stop exits 0, as supervisors expect.
    previous = signal.signal(signal.SIGTERM, _ignore_signal)
    try:
        DrainingServer(config).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def _migrate(settings: Settings) -> int:
    asyncio.run(migrate(settings.database_url))
    print(f"agent-sessions: database migrated to head ({_head_label()})")
    return 0


def _head_label() -> str:
    from alembic.script import ScriptDirectory

    from app.db.engine import alembic_config

    return ", ".join(ScriptDirectory.from_config(alembic_config()).get_heads())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-sessions",
        description="Durable computer-use agent sessions over REST and Server-Sent Events.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="apply migrations, then run the HTTP service")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")

    commands.add_parser("migrate", help="bring the database (DATABASE_URL) to the newest schema")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `agent-sessions` console script and of `python -m app`."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"agent-sessions: error: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(args, settings)
    return _migrate(settings)
