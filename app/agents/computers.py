"""The computers attached to live sessions: created on a run's first need, at the
session's last recorded page, and released when the session closes or the service stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.computers.base import Computer

log = logging.getLogger(__name__)

ComputerFactory = Callable[[dict[str, Any]], Computer]


class SessionComputers:
    """Session id -> started Computer. One lock per session so two runs never race a start."""

    def __init__(self, factory: ComputerFactory) -> None:
        self._factory = factory
        self._computers: dict[str, Computer] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def acquire(
        self, session_id: str, spec: dict[str, Any], page_url: str | None
    ) -> Computer:
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            computer = self._computers.get(session_id)
            if computer is not None and computer.is_alive():
                return computer
            if computer is not None:
                # Its browser died (or it was closed under us): start a new one.
                log.warning("the computer of %s is gone; re-creating it", session_id)
                del self._computers[session_id]
                await _close_quietly(computer, session_id)
            # A re-created browser opens where the session last was, not at its start_url.
            effective = dict(spec)
            if page_url and spec.get("type") == "browser":
                effective["start_url"] = page_url
            computer = self._factory(effective)
            try:
                await computer.start()
            except BaseException:
                # Failed or cancelled half-way: whatever it opened must not leak.
                await asyncio.shield(_close_quietly(computer, session_id))
                raise
            self._computers[session_id] = computer
            return computer

    def get(self, session_id: str) -> Computer | None:
        return self._computers.get(session_id)

    async def release(self, session_id: str) -> None:
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            computer = self._computers.pop(session_id, None)
            if computer is not None:
                await _close_quietly(computer, session_id)
        self._locks.pop(session_id, None)

    async def close_all(self) -> None:
        for session_id in list(self._computers):
            await self.release(session_id)

    def __len__(self) -> int:
        return len(self._computers)


async def _close_quietly(computer: Computer, session_id: str) -> None:
    try:
        await computer.close()
    except Exception:
        log.exception("closing the computer of %s failed", session_id)
