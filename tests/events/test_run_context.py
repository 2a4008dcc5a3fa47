"""ServiceRunContext's staged writes against the real database: a turn record and a
screenshot ride with the run's next commit, and survive a write that fails."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.base import TurnRecord
from app.agents.context import ServiceRunContext, UsageTotals
from app.agents.retry import RetryPolicy
from app.agents.safety import SafetyGate
from app.computers.base import Display, ShotImage
from app.computers.fake import FakeComputer
from app.db import repositories as repo
from app.db.models import RunRow
from app.events.log import EventLog
from tests.agents.conftest import make_config
from tests.events.conftest import new_session

PNG = ShotImage(b"\x89PNG not really", "image/png", 2, 2)


async def context_for(log: EventLog, session_id: str) -> ServiceRunContext:
    await new_session(log, session_id)

    async def add_run(db: AsyncSession) -> None:
        db.add(RunRow(id="run_1", session_id=session_id, status="running", input="go", usage={}))

    await log.append(session_id, None, apply=add_run)
    config = make_config(session_id=session_id, run_id="run_1", computer_type="fake")
    return ServiceRunContext(
        config,
        FakeComputer(Display(1280, 800)),
        log,
        log._sessionmaker,
        RetryPolicy(),
        {},
        lambda: False,
        SafetyGate(),
        60.0,
        totals=UsageTotals({}, 0, {}),
    )


def turn(index: int, output_tokens: int) -> TurnRecord:
    usage = {"input_tokens": 10, "output_tokens": output_tokens}
    return TurnRecord(index, {"messages": 1}, {"content": []}, usage, 5)


async def test_staged_writes_commit_with_the_next_write_and_survive_a_failed_one(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ctx = await context_for(event_log, "ses_ctx")
    await ctx.record_turn(turn(0, 7))
    shot = await ctx.store_screenshot(PNG, "https://example.com/")

    async def stored() -> tuple[int, bool, dict[str, int], str | None]:
        async with sessionmaker() as db:
            turns = await repo.list_turns(db, "ses_ctx", "run_1", None, 10)
            row = await repo.get_screenshot(db, "ses_ctx", shot.id)
            session = await repo.get_session(db, "ses_ctx")
        assert session is not None
        return len(turns), row is not None, session.usage, session.page_url

    assert await stored() == (0, False, {}, None)  # staged: nothing written yet
    with pytest.raises(ValueError):  # a write that commits nothing
        await ctx.emit("no.such.type", {})
    assert await stored() == (0, False, {}, None)
    # The next write carries them all, in one commit with its event and state.
    await ctx.checkpoint({"messages": []}, [("tool.result", {"call_id": "c1"})])
    count, has_shot, usage, page_url = await stored()
    assert (count, has_shot, page_url) == (1, True, "https://example.com/")
    assert usage == {"input_tokens": 10, "output_tokens": 7}
    # A turn recorded again (its results) updates the row; its usage counts once.
    await ctx.record_turn(turn(0, 7))
    await ctx.emit("turn.started", {"turn": 1})
    assert (await stored())[0] == 1 and (await stored())[2]["output_tokens"] == 7
    async with sessionmaker() as db:
        run = await db.get(RunRow, "run_1")
        assert run is not None and run.turns == 1 and run.usage["output_tokens"] == 7
        session = await repo.get_session(db, "ses_ctx")
        assert session is not None and session.agent_state == {"messages": []}
