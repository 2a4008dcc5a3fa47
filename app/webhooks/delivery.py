"""The delivery worker, one per replica: claims due outbox rows (app/db/webhooks.py),
sends each as one signed POST to the address its host was checked to resolve to,
records the answer, and schedules a retry after the next of WEBHOOK_RETRY_DELAYS_S or
gives up. At least once: a replica that dies mid-attempt leaves the row to be claimed
again once the attempt's hold lapses (the receiver de-duplicates by `webhook-id`).

A 2xx answer delivers; anything else (a redirect too: never followed), a timeout, a
refused address or a connection error is a failed attempt. The outcome of every
attempt is counted in `outcomes` and passed to each `on_outcome` listener (metrics):
"delivered", "retrying" (failed, another attempt will follow) or "failed" (given up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import webhooks as db_webhooks
from app.db.models import utcnow
from app.events.sse import event_data
from app.settings import Settings
from app.webhooks.addresses import AddressPolicy, AddressRefused, Resolver, system_resolver
from app.webhooks.signing import NoSecret, Signer

log = logging.getLogger(__name__)

USER_AGENT = "agent-sessions-webhooks/1"
# Beyond the attempt's timeout, how long a claim holds its row before another replica
# may take it (the replica is presumed dead then).
HOLD_MARGIN_S = 30.0
# After a failed claim (the database unreachable), the pause before the next look.
ERROR_PAUSE_S = 1.0
SHUTDOWN_ERROR = "interrupted: the replica shut down before an answer"
# Of an answer's body, at most this much is read (and dropped); a longer one costs its
# connection, not the worker's memory.
MAX_ANSWER_BYTES = 64 * 1024

Apply = Callable[[AsyncSession], Awaitable[Any]]
# Runs `apply` in a write transaction: the event log's writer (EventLog.transact), so
# that the worker's writes are group-committed with the rest and, on SQLite, never
# contend with them for the write lock.
Write = Callable[[Apply], Awaitable[Any]]


@dataclass(frozen=True)
class Answer:
    """What one attempt got: a status code, or an error (never both None)."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """One signed POST, to the checked address, no redirects, no proxies from the
    environment (a proxy would connect on its own, to an address nobody checked)."""

    def __init__(
        self,
        settings: Settings,
        policy: AddressPolicy,
        signer: Signer,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._policy = policy
        # DEFAULT_WEBHOOK_URL is the operator's: exempt from the address rule (SPEC),
        # still connected to at the address it resolved to.
        self._default_url = settings.default_webhook_url
        self._operator_policy = AddressPolicy(True, resolver)
        self._signer = signer
        self._timeout = settings.webhook_timeout_s
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(
                max_connections=settings.webhook_concurrency,
                max_keepalive_connections=settings.webhook_concurrency,
            ),
        )

    async def send(self, tenant: str, msg_id: str, url: str, body: bytes) -> Answer:
        try:
            policy = self._operator_policy if url == self._default_url else self._policy
            destination = await policy.destination(url)
            headers = self._signer.headers(tenant, msg_id, body, utcnow())
        except (AddressRefused, NoSecret) as exc:
            return Answer(None, f"refused: {exc}")
        headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
        request = destination.request(body, headers)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            return Answer(None, f"timeout: no answer within {self._timeout:g} s")
        except httpx.HTTPError as exc:
            return Answer(None, f"connection failed: {type(exc).__name__}: {exc}"[:500])
        try:  # read (a bounded part of) the body, so the connection can be used again
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > MAX_ANSWER_BYTES:
                    break
        except httpx.HTTPError:
            pass  # the status is the answer
        finally:
            await response.aclose()
        if response.is_redirect:
            return Answer(response.status_code, "redirect not followed")
        return Answer(response.status_code, None)

    async def close(self) -> None:
        await self._client.aclose()


class WebhookDeliverer:
    """Claims and sends this replica's share of the outbox; `wake()` says a new row was
    committed or a session's next event may have become due."""

    def __init__(self, settings: Settings, write: Write, sender: WebhookSender) -> None:
        self._write = write
        self._sender = sender
        self._replica = settings.replica_id
        self._delays = settings.webhook_delays
        self._concurrency = settings.webhook_concurrency
        self._poll_s = settings.webhook_poll_s
        self._hold_s = settings.webhook_timeout_s + HOLD_MARGIN_S
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[None], db_webhooks.Claim] = {}
        self._stopping = False
        self.outcomes: Counter[str] = Counter()
        self.on_outcome: list[Callable[[str], None]] = []

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-deliverer")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let attempts in flight finish for up to `grace_s`, then abandon
        the rest (due again at once, for whichever replica looks first)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace_s)
        abandoned = [(task, claim) for task, claim in self._inflight.items() if not task.done()]
        for task, _ in abandoned:
            task.cancel()
        if abandoned:
            await asyncio.gather(*(task for task, _ in abandoned), return_exceptions=True)

            async def release(db: AsyncSession) -> None:
                for _, claim in abandoned:
                    await db_webhooks.release_claim(db, claim, SHUTDOWN_ERROR)

            with contextlib.suppress(Exception):
                await self._write(release)
        await self._sender.close()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            free = self._concurrency - len(self._inflight)
            claimed: list[db_webhooks.Claim] = []
            if free > 0:
                try:
                    claimed = await self._write(self._claimer(free))
                except Exception as exc:
                    log.warning("claiming webhook deliveries failed: %r", exc)
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
            for claim in claimed:
                task = asyncio.create_task(self._attempt(claim), name="webhook-attempt")
                self._inflight[task] = claim
                task.add_done_callback(self._done)
            if claimed and len(claimed) == free:
                continue  # more may be due: look again before waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)

    def _claimer(self, limit: int) -> Apply:
        async def claim(db: AsyncSession) -> list[db_webhooks.Claim]:
            return await db_webhooks.claim_due(db, self._replica, limit, self._hold_s)

        return claim

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        # A slot is free, and the session's next event may be due: look at once, unless
        # most slots are still busy (a backlog), then when a quarter of them is free:
        # claims of several rows, not one claim per answer.
        if not self._stopping:
            self._wake.set()

    async def _attempt(self, claim: db_webhooks.Claim) -> None:
        try:
            if claim.event is not None:
                body = event_data(claim.event).encode()
                answer = await self._sender.send(claim.tenant, claim.delivery_id, claim.url, body)
            else:
                answer = Answer(None, "the event no longer exists")
            await self._record(claim, answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database error: the hold lapses, another try follows
            log.warning(
                "recording webhook attempt %s/%d failed: %r", claim.delivery_id, claim.attempt, exc
            )

    async def _record(self, claim: db_webhooks.Claim, answer: Answer) -> None:
        retries_left = claim.attempt <= len(self._delays)
        final: db_webhooks.Final | None
        if answer.delivered:
            final, outcome = "delivered", "delivered"
        elif retries_left:
            final, outcome = None, "retrying"
        else:
            final, outcome = "failed", "failed"
        delay = self._delays[claim.attempt - 1] if final is None else 0.0

        async def finish(db: AsyncSession) -> bool:
            return await db_webhooks.finish_attempt(
                db,
                claim,
                status_code=answer.status_code,
                error=answer.error,
                final=final,
                retry_in_s=delay,
            )

        await self._write(finish)
        self.outcomes[outcome] += 1
        for listener in self.on_outcome:
            listener(outcome)
        if outcome != "delivered":
            log.info(
                "webhook %s (session %s, seq %d) attempt %d %s: %s",
                claim.delivery_id,
                claim.session_id,
                claim.event.seq if claim.event is not None else 0,
                claim.attempt,
                "will be retried" if outcome == "retrying" else "failed; given up",
                answer.error or f"HTTP {answer.status_code}",
            )
        if final is None and delay <= self._poll_s:
            # A short delay (tests) would otherwise wait for the next poll.
            asyncio.get_running_loop().call_later(delay, self._wake.set)
