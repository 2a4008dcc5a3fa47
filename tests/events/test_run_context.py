"""ServiceRunContext's staged writes against the real database: a turn record and a
screenshot ride with the run's next commit, and survive a write that fails; so
does a deferred checkpoint, whose events go ahead of the next write's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.base import TurnRecord
from app.agents.context import RunSuspended, ServiceRunContext, UsageTotals
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


async def context_for(
    log: EventLog, session_id: str, should_suspend: Callable[[], bool] = lambda: False
) -> ServiceRunContext:
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
        should_suspend,
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


async def logged(
    sessionmaker: async_sessionmaker[AsyncSession], session_id: str
) -> list[tuple[int, str]]:
    async with sessionmaker() as db:
        events = await repo.list_events(db, session_id, 0, 100)
    return [(e.seq, e.type) for e in events if e.run_id == "run_1"]


async def agent_state(sessionmaker: async_sessionmaker[AsyncSession], session_id: str) -> object:
    async with sessionmaker() as db:
        session = await repo.get_session(db, session_id)
    assert session is not None
    return session.agent_state


async def test_a_deferred_checkpoint_commits_ahead_of_the_next_write_in_its_transaction(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ctx = await context_for(event_log, "ses_defer")
    subscription = event_log.broker.subscribe("ses_defer")
    reply = {"messages": ["reply"]}
    await ctx.checkpoint(reply, [("assistant.message", {"text": "hi"})], defer=True)
    assert ctx.deferred
    assert await logged(sessionmaker, "ses_defer") == []  # nothing written yet
    assert await agent_state(sessionmaker, "ses_defer") == {}
    assert ctx.state == {}  # the context reports what is committed
    assert subscription.queue.empty()

    intent = {"messages": ["reply"], "in_flight": {"call_id": "c1"}}
    await ctx.checkpoint(intent, [("tool.call", {"call_id": "c1", "action": {"type": "x"}})])
    assert not ctx.deferred
    committed = await logged(sessionmaker, "ses_defer")
    assert [t for _, t in committed] == ["assistant.message", "tool.call"]
    assert committed[1][0] == committed[0][0] + 1
    assert await agent_state(sessionmaker, "ses_defer") == intent  # the newer state wins
    assert ctx.state == intent
    published = [subscription.queue.get_nowait() for _ in range(subscription.queue.qsize())]
    assert [(e.seq, e.type) for e in published if e is not None] == committed


async def test_a_deferred_checkpoint_survives_a_failed_write_and_flush_commits_it(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ctx = await context_for(event_log, "ses_flush")
    result = {"messages": ["result"]}
    await ctx.checkpoint(result, [("tool.result", {"call_id": "c1"})], defer=True)
    with pytest.raises(ValueError):  # a write that commits nothing
        await ctx.emit("no.such.type", {})
    assert ctx.deferred and await logged(sessionmaker, "ses_flush") == []
    await ctx.flush()
    assert not ctx.deferred
    assert [t for _, t in await logged(sessionmaker, "ses_flush")] == ["tool.result"]
    assert await agent_state(sessionmaker, "ses_flush") == result
    assert ctx.state == result
    assert ctx.last_action_executed is None  # the result was observed, the call never seen
    await ctx.flush()  # nothing deferred: no write
    assert len(await logged(sessionmaker, "ses_flush")) == 1


async def test_take_staged_drops_a_deferred_checkpoint_left_pending(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ctx = await context_for(event_log, "ses_drop")
    await ctx.record_turn(turn(0, 3))
    await ctx.checkpoint({"messages": ["late"]}, [("assistant.message", {})], defer=True)
    staged = ctx.take_staged()
    assert staged is not None and not ctx.deferred
    await event_log.append("ses_drop", "run_1", [("run.completed", {})], staged)
    assert [t for _, t in await logged(sessionmaker, "ses_drop")] == ["run.completed"]
    assert await agent_state(sessionmaker, "ses_drop") == {}  # the last committed state
    async with sessionmaker() as db:
        assert len(await repo.list_turns(db, "ses_drop", "run_1", None, 10)) == 1


async def test_a_deferred_checkpoint_commits_at_once_when_the_service_drains(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    draining = False
    ctx = await context_for(event_log, "ses_drain", lambda: draining)
    await ctx.checkpoint({"step": 1}, [("tool.result", {"call_id": "c1"})], defer=True)
    draining = True
    with pytest.raises(RunSuspended):
        await ctx.checkpoint({"step": 2}, [("tool.result", {"call_id": "c2"})], defer=True)
    assert not ctx.deferred
    assert [t for _, t in await logged(sessionmaker, "ses_drain")] == ["tool.result"] * 2
    assert await agent_state(sessionmaker, "ses_drain") == {"step": 2}


async def test_a_second_cancel_during_a_write_still_records_what_it_committed(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ctx = await context_for(event_log, "ses_cancel")
    reply = {"messages": ["reply"]}
    await ctx.checkpoint(reply, [("assistant.message", {"text": "hi"})], defer=True)
    write = asyncio.create_task(ctx.emit("turn.started", {"turn": 1}))
    await asyncio.sleep(0)  # the write is queued
    write.cancel()
    await asyncio.sleep(0)
    write.cancel()  # again, while the first cancel waits for the commit
    with pytest.raises(asyncio.CancelledError):
        await write
    assert [t for _, t in await logged(sessionmaker, "ses_cancel")] == [
        "assistant.message",
        "turn.started",
    ]
    assert ctx.state == reply and not ctx.deferred  # the context saw the commit
