"""Screenshot bytes, served by id (events carry only the reference)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.api.errors import Problem
from app.api.schemas import ID_PATTERN
from app.db import repositories as repo
from app.deps import DbSession, SessionOr404

router = APIRouter(prefix="/v1/sessions/{sid}", tags=["screenshots"])


@router.get(
    "/screenshots/{shot_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    summary="The image bytes of a screenshot",
)
async def get_screenshot(
    shot_id: Annotated[str, Path(max_length=128, pattern=ID_PATTERN)],
    session: SessionOr404,
    db: DbSession,
) -> Response:
    row = await repo.get_screenshot(db, session.id, shot_id)
    if row is None:
        raise Problem(404, f"Screenshot {shot_id} not found.")
    # Content-addressed: the bytes behind an id never change.
    return Response(
        row.data,
        media_type=row.media_type,
        headers={
            "Cache-Control": "private, max-age=31536000, immutable",
            "ETag": f'"{row.sha256}"',
        },
    )
