"""The RunContext the runner hands a provider loop: events, checkpoints, turns,
screenshots and provider calls, each committed through the event log."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.base import Event, RunConfig, StoredShot, TurnRecord
from app.agents.retry import RetryPolicy, call_with_retries
from app.computers.base import Computer, ShotImage
from app.db import repositories as repo
from app.db.models import RunRow, TurnRow, utcnow
from app.events.log import EventLog

T = TypeVar("T")
_SHOT_CACHE = 8


class RunSuspended(Exception):
    """Raised from a checkpoint when the service drains: the run stops at a step
    boundary, stays `running` in the database, and resumes at the next start."""


class ServiceRunContext:
    """One run's link to the service. Tracks the last executed action for run.cancelled."""

    def __init__(
        self,
        config: RunConfig,
        computer: Computer,
        log: EventLog,
        sessionmaker: async_sessionmaker[AsyncSession],
        policy: RetryPolicy,
        state: dict[str, Any],
        should_suspend: Callable[[], bool],
    ) -> None:
        self.config = config
        self.computer = computer
        self.state = state
        self.last_action_executed: dict[str, Any] | None = None
        self._log = log
        self._sessionmaker = sessionmaker
        self._policy = policy
        self._should_suspend = should_suspend
        self._calls: dict[str, Any] = {}
        self._shots: OrderedDict[str, ShotImage] = OrderedDict()

    def _observe(self, events: Sequence[Event]) -> None:
        for type_, data in events:
            if type_ == "tool.call":
                self._calls[str(data.get("call_id"))] = data.get("action")
            elif type_ == "tool.result":
                call_id = str(data.get("call_id"))
                if call_id in self._calls and not data.get("not_executed"):
                    self.last_action_executed = {
                        "call_id": call_id,
                        "action": self._calls[call_id],
                    }

    async def emit(self, type_: str, data: dict[str, Any]) -> int:
        (event,) = await self._log.append(
            self.config.session_id, self.config.run_id, [(type_, data)]
        )
        self._observe([(type_, data)])
        return event.seq

    async def checkpoint(self, state: dict[str, Any], events: Sequence[Event] = ()) -> None:
        session_id = self.config.session_id

        async def save(db: AsyncSession) -> None:
            await repo.update_session(db, session_id, agent_state=state)

        await self._log.append(session_id, self.config.run_id, list(events), apply=save)
        self.state = state
        self._observe(events)
        if self._should_suspend() and not state.get("in_flight"):
            raise RunSuspended

    async def record_turn(self, turn: TurnRecord) -> None:
        config = self.config

        async def save(db: AsyncSession) -> None:
            row = TurnRow(
                id=f"turn_{config.run_id[4:]}_{turn.index:04d}",
                session_id=config.session_id,
                run_id=config.run_id,
                index=turn.index,
                request=turn.request,
                response=turn.response,
                actions=turn.actions,
                results=turn.results,
                usage=turn.usage,
                latency_ms=turn.latency_ms,
                ended_at=utcnow(),
            )
            inserted = await repo.upsert_turn(db, row)
            run = await db.get(RunRow, config.run_id)
            if run is not None:
                run.turns = max(run.turns or 0, turn.index + 1)
                # A turn may be written twice (response, then results): count usage once.
                if inserted:
                    run.usage = repo.add_usage(run.usage, turn.usage)
                    await repo.add_session_usage(db, config.session_id, turn.usage)

        await self._log.append(config.session_id, config.run_id, apply=save)

    async def store_screenshot(self, image: ShotImage, page_url: str | None) -> StoredShot:
        session_id = self.config.session_id

        async def save(db: AsyncSession) -> str:
            shot_id = await repo.store_screenshot(
                db, session_id, image.data, image.media_type, image.width, image.height
            )
            if page_url is not None:
                await repo.update_session(db, session_id, page_url=page_url)
            return shot_id

        _, shot_id = await self._log.transact(session_id, self.config.run_id, apply=save)
        self._remember(shot_id, image)
        return StoredShot(
            shot_id, session_id, image.width, image.height, image.media_type, page_url
        )

    def _remember(self, shot_id: str, image: ShotImage) -> None:
        self._shots[shot_id] = image
        self._shots.move_to_end(shot_id)
        while len(self._shots) > _SHOT_CACHE:
            self._shots.popitem(last=False)

    async def load_screenshot(self, shot_id: str) -> ShotImage:
        cached = self._shots.get(shot_id)
        if cached is not None:
            return cached
        async with self._sessionmaker() as db:
            row = await repo.get_screenshot(db, self.config.session_id, shot_id)
        if row is None:
            raise KeyError(f"screenshot {shot_id} not found")
        image = ShotImage(row.data, row.media_type, row.width, row.height)
        self._remember(shot_id, image)
        return image

    async def call_provider(self, call: Callable[[], Awaitable[T]]) -> T:
        async def on_retry(data: dict[str, Any]) -> None:
            await self.emit("provider.retry", data)

        return await call_with_retries(call, self._policy, on_retry)
