"""The computers attached to live sessions: created on a run's first need, at the
session's last recorded page; re-created at once if the browser crashes during a run;
released when the session closes, when it has been idle for `COMPUTER_IDLE_TTL_S`,
or when the service stops."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from app.computers.base import Action, ActionResult, Computer, ComputerError, ShotImage

log = logging.getLogger(__name__)

ComputerFactory = Callable[[dict[str, Any]], Computer]

# How often the reaper looks for idle computers, as a share of the TTL: a computer
# is released at most a quarter of the TTL late (and at most this many seconds).
_REAP_FRACTION = 0.25
_REAP_MAX_INTERVAL_S = 30.0


class SessionComputers:
    """Session id -> started computer. One lock per session so two runs never race a start,
    and the idle reaper never closes a computer a run is acquiring."""

    def __init__(self, factory: ComputerFactory, *, idle_ttl_s: float = 0.0) -> None:
        self._factory = factory
        self._idle_ttl_s = idle_ttl_s
        self._computers: dict[str, ResilientComputer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Runs in progress per session (a count: a cancelled run may still be winding
        # down when the next one starts) and when each session last used its computer.
        self._runs: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        self._stopping = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None

    async def acquire(
        self, session_id: str, spec: dict[str, Any], page_url: str | None
    ) -> Computer:
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            self._last_used[session_id] = time.monotonic()
            computer = self._computers.get(session_id)
            if computer is not None and computer.is_alive():
                return computer
            if computer is not None:
                # Its browser died between runs (or it was closed under us): start a new one.
                log.warning("the computer of %s is gone; re-creating it", session_id)
                del self._computers[session_id]
                await _close_quietly(computer, f"the computer of {session_id}")
            computer = ResilientComputer(self._factory, spec, page_url, session_id=session_id)
            try:
                await computer.start()
            except BaseException:
                # Failed or cancelled half-way: whatever it opened must not leak.
                await asyncio.shield(_close_quietly(computer, f"the computer of {session_id}"))
                raise
            self._computers[session_id] = computer
            return computer

    def get(self, session_id: str) -> Computer | None:
        """The backend (browser, fake...) currently behind the session's computer."""
        computer = self._computers.get(session_id)
        return None if computer is None else computer.backend

    async def release(self, session_id: str) -> None:
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            computer = self._computers.pop(session_id, None)
            if computer is not None:
                await _close_quietly(computer, f"the computer of {session_id}")
        self._locks.pop(session_id, None)
        self._last_used.pop(session_id, None)

    async def close_all(self) -> None:
        for session_id in list(self._computers):
            await self.release(session_id)

    async def leave_all(self, resumable: set[str]) -> None:
        """At shutdown: the remote browsers (kernel) of sessions with a run to resume are
        left running for the next process to re-attach to; every other computer closes
        (an idle session's remote browser would otherwise run, and bill, unowned)."""
        for session_id in list(self._computers):
            if session_id in resumable:
                await self.leave(session_id)
            else:
                await self.release(session_id)

    async def leave(self, session_id: str) -> None:
        """The session's run goes on in another process (hand-off, a lost lease): a
        remote browser is left for it to re-attach to, a local one closes."""
        computer = self._computers.pop(session_id, None)
        self._last_used.pop(session_id, None)
        if computer is not None:
            await computer.leave()

    def __len__(self) -> int:
        return len(self._computers)

    # ---- idle release -------------------------------------------------------------

    def run_started(self, session_id: str) -> None:
        """A run of the session is in progress: its computer is not idle until it ends."""
        self._runs[session_id] = self._runs.get(session_id, 0) + 1

    def run_ended(self, session_id: str) -> None:
        """The run is over (whatever its outcome); the idle time counts from now."""
        left = self._runs.get(session_id, 0) - 1
        if left > 0:
            self._runs[session_id] = left
        else:
            self._runs.pop(session_id, None)
        if session_id in self._computers:
            self._last_used[session_id] = time.monotonic()

    def start(self) -> None:
        """Start releasing idle computers in the background (nothing to do with a TTL of 0)."""
        if self._idle_ttl_s > 0 and self._reaper is None:
            self._stopping.clear()
            self._reaper = asyncio.create_task(self._reap(), name="idle-computer-reaper")

    async def stop(self) -> None:
        """Stop the reaper; a release it has begun finishes first."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            self._stopping.set()
            await asyncio.wait({reaper})

    async def release_idle(self) -> list[str]:
        """Release the computers idle longer than the TTL; the ids of their sessions."""
        released: list[str] = []
        for session_id in [s for s in list(self._computers) if self._is_idle(s)]:
            lock = self._locks.setdefault(session_id, asyncio.Lock())
            async with lock:
                # Again under the lock: a run may have started meanwhile. One that starts
                # after this point waits for the lock, then re-creates the computer.
                if not self._is_idle(session_id):
                    continue
                computer = self._computers.pop(session_id)
                self._last_used.pop(session_id, None)
                await _close_quietly(computer, f"the computer of {session_id}")
            released.append(session_id)
        if released:
            log.info("released the idle computers of %s", ", ".join(released))
        return released

    def _is_idle(self, session_id: str) -> bool:
        if session_id in self._runs or session_id not in self._computers:
            return False
        last = self._last_used.get(session_id)
        return last is not None and time.monotonic() - last >= self._idle_ttl_s

    async def _reap(self) -> None:
        interval = min(self._idle_ttl_s * _REAP_FRACTION, _REAP_MAX_INTERVAL_S)
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), interval)
            except TimeoutError:
                pass
            if self._stopping.is_set():
                return
            try:
                await self.release_idle()
            except Exception:
                # A failed pass must not end the reaper: the next one tries again.
                log.exception("releasing idle computers failed")


class ResilientComputer:
    """A session's computer that survives its backend: when the backend stops being
    alive (Chromium crashed) the next call re-creates it at the last page seen.

    A crash found by an action fails that action with a note saying what happened
    (it may not have run, and the screen the model acted on is gone), so the model
    looks at the next screenshot, which comes from the new browser, before acting
    again. A crash found by a screenshot is told with the next action's output:
    the model already saw the new browser in that screenshot.
    """

    def __init__(
        self,
        factory: ComputerFactory,
        spec: dict[str, Any],
        page_url: str | None,
        *,
        session_id: str = "",
    ) -> None:
        self._factory = factory
        self._session_id = session_id
        self._spec = spec
        self._url = page_url or spec.get("start_url")  # the last page known to be open
        self._backend = factory(_opening(spec, page_url))
        self.display = self._backend.display
        self._untold: str | None = None  # a crash found by a screenshot, for the next action
        self._closed = False  # released: a backend closed on purpose is not brought back

    @property
    def backend(self) -> Computer:
        return self._backend

    async def start(self) -> None:
        try:
            await self._backend.start()
        except ComputerError:
            if _opening(self._spec, self._url) is self._spec:
                raise  # opened where the tenant asked: its failure is theirs to see
            # The page the session was last on no longer loads (down, gone, now a
            # download): open where the session started instead of failing every run.
            log.warning("reopening %s failed; starting at start_url instead", self._url)
            await _close_quietly(self._backend, f"the computer of {self._session_id}")
            self._url = self._spec.get("start_url")
            self._backend = self._factory(self._spec)
            await self._backend.start()

    def is_alive(self) -> bool:
        return self._backend.is_alive()

    def _crashed(self) -> bool:
        return not self._closed and not self._backend.is_alive()

    async def close(self) -> None:
        self._closed = True
        await self._backend.close()

    async def leave(self) -> None:
        """Stop using the backend; one that can be re-attached to (`detach`) stays up."""
        self._closed = True
        detach = getattr(self._backend, "detach", None)
        if callable(detach):
            detach()
        else:
            await _close_quietly(self._backend, f"the computer of {self._session_id}")

    async def current_url(self) -> str | None:
        url = await self._backend.current_url()
        if url:  # a dead browser has forgotten its pages: keep the last one known
            self._url = url
        return url

    async def screenshot(self) -> ShotImage:
        if self._crashed():
            self._untold = await self._restart()
        try:
            return await self._backend.screenshot()
        except ComputerError:
            if not self._crashed():
                raise
        self._untold = await self._restart()
        return await self._backend.screenshot()

    async def execute(self, action: Action) -> ActionResult:
        if self._crashed():
            # The model chose this action on a screen that no longer exists: do not run it.
            crash = await self._restart()
            raise ComputerError(f"{crash}; this action was not run. Look at the screen again.")
        try:
            result = await self._backend.execute(action)
        except ComputerError as exc:
            if not self._crashed():
                raise
            crash = await self._restart()
            raise ComputerError(f"{crash}; the last action may not have run.") from exc
        if self._crashed():  # it died during an action that did not touch it (a wait)
            crash = await self._restart()
            raise ComputerError(f"{crash}; the last action may not have run.")
        await self.current_url()  # a batch of actions has no screenshot between them
        untold, self._untold = self._untold, None
        if untold is None:
            return result
        note = f"{untold} before the last screenshot."
        return ActionResult(
            output="\n".join(filter(None, [result.output, note])), image=result.image
        )

    async def _restart(self) -> str:
        """Replace the dead backend by a new one at the last URL; the note for the model."""
        where = f"at {self._url}" if self._url else "on a blank page"
        log.warning("the browser of session %s crashed; restarting it %s", self._session_id, where)
        await _close_quietly(self._backend, f"the crashed browser of {self._session_id}")
        backend: Computer | None = None
        try:
            backend = self._factory(_opening(self._spec, self._url))
            await backend.start()
        except BaseException as exc:
            # Failed or cancelled half-way: whatever it opened must not leak.
            if backend is not None:
                await asyncio.shield(
                    _close_quietly(backend, f"a half-started browser of {self._session_id}")
                )
            if isinstance(exc, ComputerError):
                raise ComputerError(
                    f"The browser crashed and could not be restarted: {exc}"
                ) from exc
            raise
        self._backend = backend
        return f"The browser crashed and was restarted {where}"


def _opening(spec: dict[str, Any], page_url: str | None) -> dict[str, Any]:
    """The spec to build a computer from: a re-created browser opens where the session
    last was, not at its start_url."""
    # Only a real web page: never an error page (chrome-error://) or another scheme.
    if page_url and spec.get("type", "browser") == "browser" and _is_web(page_url):
        return {**spec, "start_url": page_url}
    return spec


def _is_web(url: str) -> bool:
    return url.startswith(("http://", "https://"))


async def _close_quietly(computer: Computer, what: str) -> None:
    try:
        await computer.close()
    except Exception:
        log.exception("closing %s failed", what)
