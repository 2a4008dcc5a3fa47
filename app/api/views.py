"""Rows -> wire models. Kept apart from the routes so every resource renders one way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncSession

from app.api import schemas
from app.db import repositories as repo
from app.db.models import RunRow, SafetyCheckRow, SessionRow, TurnRow


def _usage(raw: dict[str, Any] | None) -> schemas.Usage:
    raw = raw or {}
    return schemas.Usage(**{k: int(raw.get(k, 0) or 0) for k in schemas.Usage.model_fields})


def public_computer(computer: dict[str, Any]) -> dict[str, Any]:
    """The computer as the API shows it: a `cdp_url` without its user, password, query
    and fragment, which often carry the browser provider's key (session tokens read
    sessions and their events; the service keeps the whole URL to connect)."""
    url = computer.get("cdp_url")
    if not isinstance(url, str):
        return computer
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return computer | {"cdp_url": urlunsplit((parts.scheme, netloc, parts.path, "", ""))}


def session_view(row: SessionRow, last_run: RunRow | None, last_event_seq: int) -> schemas.Session:
    return schemas.Session(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        provider=row.provider,
        model=row.model,
        computer=public_computer(row.computer),
        options=row.options,
        safety=row.safety,
        metadata=row.metadata_,
        webhook=schemas.WebhookSpec.model_construct(**row.webhook) if row.webhook else None,
        active_run_id=row.active_run_id,
        last_run=(
            schemas.LastRun(
                id=last_run.id, status=last_run.status, stop_reason=last_run.stop_reason
            )
            if last_run is not None
            else None
        ),
        last_event_seq=last_event_seq,
        usage=_usage(row.usage),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def sessions_view(db: AsyncSession, rows: Sequence[SessionRow]) -> list[schemas.Session]:
    run_ids = [r.last_run_id for r in rows if r.last_run_id]
    runs = {run.id: run for run in await repo.get_runs(db, run_ids)} if run_ids else {}
    return [session_view(r, runs.get(r.last_run_id or ""), r.last_event_seq) for r in rows]


def run_view(row: RunRow) -> schemas.Run:
    return schemas.Run(
        id=row.id,
        session_id=row.session_id,
        status=row.status,  # type: ignore[arg-type]
        input=row.input,
        output=row.output,
        output_schema=row.output_schema,
        output_json=row.output_json,
        stop_reason=row.stop_reason,
        error=schemas.RunError(
            type=row.error.get("type", "error"), message=row.error.get("message", "")
        )
        if row.error
        else None,
        turns=row.turns or 0,
        usage=_usage(row.usage),
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def turn_view(row: TurnRow) -> schemas.Turn:
    return schemas.Turn(
        id=row.id,
        run_id=row.run_id,
        index=row.index,
        request=row.request,
        response=row.response,
        actions=row.actions,
        results=row.results,
        usage=_usage(row.usage),
        latency_ms=row.latency_ms,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def safety_check_view(row: SafetyCheckRow) -> schemas.SafetyCheck:
    return schemas.SafetyCheck(
        id=row.id,
        provider_check_id=row.provider_check_id,
        code=row.code,
        message=row.message,
        run_id=row.run_id,
        call_id=row.call_id,
        action=row.action,
        status=row.status,  # type: ignore[arg-type]
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        reason=row.reason,
        decided_by=row.decided_by,
    )
