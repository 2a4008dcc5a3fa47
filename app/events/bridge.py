"""The LISTEN/NOTIFY bridge (Postgres): events and commands from other replicas.

One connection per process LISTENs on two channels:

- `agent_sessions_events`: every transaction that adds events notifies
  "<session id> <first seq> <last seq> <origin>" (app/events/log.py). For the
  sessions with subscribers here, the bridge reads the new rows from the
  database (all the sessions woken meanwhile in one statement) and publishes
  them to the local broker, so a stream on any replica is live whichever
  replica appends. This process's own commits (its origin) are skipped: its
  writer publishes them.
- `agent_sessions_commands`: short commands for the runner ("cancel <run> <reason>",
  "decided <run>", "work", "release <session>", "leave <session> <replica>"), sent in
  the transaction that commits what they announce.

A lost connection is re-established with backoff; every stream here then re-reads
the database from its own cursor (again a second later, when every peer has heard
this replica's "hello"), and `/readyz` answers 503 meanwhile. The
bridge also counts the other replicas' LISTEN connections every few seconds:
alone, this replica sends no NOTIFY at all (one statement less per commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import repositories as repo
from app.db.engine import async_url
from app.events.broker import Broker
from app.events.log import EventLog

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "agent_sessions_events"
COMMANDS_CHANNEL = "agent_sessions_commands"
APPLICATION_NAME = "agent-sessions-listen"
PAGE = 500
PEER_CHECK_S = 2.0
JOIN_CATCH_UP_S = 1.0
BACKOFF_MAX_S = 5.0


class ListenBridge:
    def __init__(
        self,
        database_url: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        event_log: EventLog,
        on_command: Callable[[str], None],
    ) -> None:
        url = async_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._sessionmaker = sessionmaker
        self._log = event_log
        self._broker: Broker = event_log.broker
        self._on_command = on_command
        self._task: asyncio.Task[None] | None = None
        # Sessions with new events to read: the seq after which to read.
        self._wanted: dict[str, int] = {}
        self._reader: asyncio.Task[None] | None = None
        self._up = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="listen-bridge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._reader is not None:
            self._reader.cancel()

    async def signal(self, db: AsyncSession, message: str) -> None:
        """Send a command to every replica when `db`'s transaction commits."""
        await repo.notify(db, COMMANDS_CHANNEL, [message])

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._up.wait()

    # ---- the connection -----------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            lost = asyncio.Event()
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": APPLICATION_NAME}, timeout=10
                )
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(EVENTS_CHANNEL, self._on_events)
                await connection.add_listener(COMMANDS_CHANNEL, self._on_commands)
                self._up.set()
                backoff = 0.1
                # Tell the others a listener (re)joined: they count peers again now.
                await connection.execute(f"NOTIFY {COMMANDS_CHANNEL}, 'hello'")
                self._catch_up_all()
                self._on_command("work")  # commands may have been missed meanwhile
                # Once more when every peer has heard the hello: what they committed
                # before it came with no NOTIFY.
                later = asyncio.get_running_loop().call_later(JOIN_CATCH_UP_S, self._catch_up_all)
                try:
                    await self._watch(connection, lost)
                finally:
                    later.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed: %r; retrying in %.1fs", exc, backoff)
            finally:
                self._up.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=1))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _watch(self, connection: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Until the connection is lost: count the peers every few seconds (which also
        proves the connection alive)."""
        while not lost.is_set():
            others = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = $1 AND pid <> pg_backend_pid()",
                APPLICATION_NAME,
                timeout=5,
            )
            self._log.peers = bool(others)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PEER_CHECK_S):
                    await lost.wait()
        raise ConnectionError("the LISTEN connection was closed")

    # ---- notifications ------------------------------------------------------------

    def _on_commands(self, _c: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == "hello":
            self._log.peers = True  # a replica joined: notify from now on
            return
        try:
            self._on_command(payload)
        except Exception:
            log.exception("command %r failed", payload)

    def _on_events(self, _c: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            session_id, first_text, last_text, origin = payload.split(" ")
            first, last = int(first_text), int(last_text)
        except ValueError:
            log.warning("malformed event notification %r", payload)
            return
        if origin == self._log.origin:
            return  # this process's own commit: its writer publishes it
        if not self._broker.subscriber_count(session_id):
            return
        known = self._broker.last_published(session_id)
        if known is not None and known >= last:
            return  # published here already
        after = first - 1 if known is None else known
        self._wanted[session_id] = min(after, self._wanted.get(session_id, after))
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="listen-bridge-reads")

    def _catch_up_all(self) -> None:
        """Every stream here may have missed events (no NOTIFY reached this process for
        a while): each re-reads the database from its own cursor."""
        for session_id in self._broker.subscribed_sessions():
            self._broker.lag(session_id)

    async def _read(self) -> None:
        """Read and publish the new events of every session woken meanwhile, all
        sessions in one statement per round (wake-ups during a read join the next)."""
        try:
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                cursors = {}
                for session_id, after in wanted.items():
                    known = self._broker.last_published(session_id)
                    cursors[session_id] = after if known is None else max(after, known)
                try:
                    async with self._sessionmaker() as db:
                        rows = await repo.list_events_of_sessions(db, cursors, PAGE)
                except Exception as exc:
                    log.warning("reading the events of %d sessions failed: %r", len(cursors), exc)
                    for session_id in cursors:
                        self._broker.lag(session_id)  # their streams read them themselves
                    continue
                for session_id, events in itertools.groupby(rows, lambda e: e.session_id):
                    page = list(events)
                    self._broker.publish(session_id, page)
                    cursors[session_id] = page[-1].seq
                if len(rows) == PAGE:  # cut short: every session again, from where it got to
                    for session_id, seq in cursors.items():
                        self._wanted[session_id] = min(seq, self._wanted.get(session_id, seq))
        finally:
            self._reader = None
