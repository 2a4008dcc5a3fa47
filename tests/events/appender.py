"""One process of tests/events/test_multiwriter.py: an EventLog and a LISTEN bridge on
a Postgres database, appending to one session while another process does the same,
and a stream (replay then tail) reading everything both append.

    python -m tests.events.appender DATABASE_URL SESSION_ID NAME COUNT TOTAL

Waits for "go" on stdin, appends COUNT events tagged NAME, reads the session's stream
until seq TOTAL and prints the seqs it received as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys

from app.db.engine import create_engine, create_sessionmaker
from app.events.bridge import EVENTS_CHANNEL, ListenBridge
from app.events.broker import Broker
from app.events.log import EventLog
from app.events.sse import StreamRequest, stream_batches


async def main(url: str, session_id: str, name: str, count: int, total: int) -> None:
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    log = EventLog(sessionmaker, Broker(), notify_channel=EVENTS_CHANNEL)
    log.start()
    bridge = ListenBridge(url, sessionmaker, log, lambda _command: None)
    bridge.start()
    await bridge.wait_connected(10)
    received: list[int] = []

    async def read() -> None:
        request = StreamRequest(session_id, after=0, follow=True)
        async for batch in stream_batches(sessionmaker, log.broker, request, wake_every=0.2):
            received.extend(event.seq for event in batch)
            if received[-1] >= total:
                return

    reader = asyncio.create_task(read())
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go": both processes start together
    for i in range(count):
        await log.append(session_id, None, [("assistant.message", {"by": name, "i": i})])
    await asyncio.wait_for(reader, 60)
    print(json.dumps(received), flush=True)
    await bridge.stop()
    await log.stop()
    await engine.dispose()


if __name__ == "__main__":
    url, session_id, name, count, total = sys.argv[1:6]
    asyncio.run(main(url, session_id, name, int(count), int(total)))
