"""Resume: reconnect to a session with 10,000 stored events and replay them; then
kill-and-reconnect cycles during a live run.

    .venv/bin/python -m bench.resume [--events 10000] [--repeats 5] [--cycles 100]
        [--live-rate 200] [--database-url URL]

The service runs in a subprocess (bench._servers service: the real app, SQLite in a
temp dir unless --database-url); this process is the client (httpx, uvloop).

1. Replay: `GET /v1/sessions/{sid}/events` with `Last-Event-ID: 0` over SSE: time
   from sending the request to the first replayed event, and events/s to the
   10,000th. Baseline: the same events read as JSON pages (`?format=json&limit=1000`,
   the largest page), first page and events/s. Median of `--repeats`.
2. Live: the service appends `--live-rate` events/s to one session (its EventLog, via
   the bench-only publish route) while the client, `--cycles` times, reads a random
   number of events then kills its connection (closes the socket mid-stream without
   reading on) and reconnects with `Last-Event-ID: <last seq seen>`. Every event
   must arrive exactly once and in order across all connections; also reports
   reconnect -> first event latency. Exits non-zero on any gap or duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import uvloop

from bench._client import ServerProcess, client, pct, sse_events


async def sse_replay(http: httpx.AsyncClient, sid: str, count: int) -> tuple[float, float]:
    """(seconds to first event, events/s) over SSE from Last-Event-ID 0."""
    start = time.perf_counter()
    first = 0.0
    last = 0
    headers = {"Accept": "text/event-stream", "Last-Event-ID": "0"}
    async with http.stream(
        "GET", f"/v1/sessions/{sid}/events", params={"follow": "false"}, headers=headers
    ) as response:
        async for event in sse_events(response):
            if event is None:
                continue
            if not first:
                first = time.perf_counter() - start
            if event["seq"] != last + 1:
                raise SystemExit(f"replay: GAP OR DUPLICATE {last} -> {event['seq']}")
            last = event["seq"]
    elapsed = time.perf_counter() - start
    if last != count:
        raise SystemExit(f"replay: got {last} of {count} events")
    return first, count / elapsed


async def json_replay(http: httpx.AsyncClient, sid: str, count: int) -> tuple[float, float]:
    """(seconds to the first page, events/s) reading JSON pages of 1,000."""
    start = time.perf_counter()
    first = 0.0
    after = 0
    while True:
        page = await http.get(
            f"/v1/sessions/{sid}/events", params={"format": "json", "limit": 1000, "after": after}
        )
        page.raise_for_status()
        body = page.json()
        if not first:
            first = time.perf_counter() - start
        for event in body["data"]:
            if event["seq"] != after + 1:
                raise SystemExit(f"json: GAP OR DUPLICATE {after} -> {event['seq']}")
            after = event["seq"]
        if not body["has_more"]:
            break
    elapsed = time.perf_counter() - start
    if after != count:
        raise SystemExit(f"json: got {after} of {count} events")
    return first, count / elapsed


async def live_cycles(
    http: httpx.AsyncClient, sid: str, cycles: int, rate: float, base_seq: int
) -> tuple[int, list[float]]:
    """Kill-and-reconnect `cycles` times while events are appended; returns
    (events received, reconnect -> first event latencies)."""
    seconds = cycles * 0.25 + 5
    publisher = asyncio.create_task(
        http.post("/bench/publish", json={"sessions": [sid], "rate": rate, "seconds": seconds})
    )
    rng = random.Random(5)
    last = base_seq
    reconnects: list[float] = []
    headers = {"Accept": "text/event-stream"}
    for cycle in range(cycles + 1):
        final = cycle == cycles
        take = rng.randint(1, 40)
        got = 0
        if final:
            await publisher  # then read what is left, to the end of the log
        started = time.perf_counter()
        headers["Last-Event-ID"] = str(last)
        params = {"follow": "false"} if final else {}
        async with http.stream(
            "GET", f"/v1/sessions/{sid}/events", params=params, headers=headers
        ) as response:
            async for event in sse_events(response):
                if event is None:
                    continue
                if got == 0 and not final and cycle > 0:
                    reconnects.append(time.perf_counter() - started)
                if event["seq"] != last + 1:
                    raise SystemExit(f"live: GAP OR DUPLICATE {last} -> {event['seq']}")
                last = event["seq"]
                got += 1
                if not final and got >= take:
                    break  # leaving the block closes the connection mid-stream
    published: int = publisher.result().json()["published"]
    if last != base_seq + published:
        raise SystemExit(f"live: LOST EVENTS: last seq {last}, expected {base_seq + published}")
    return published, reconnects


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--live-rate", type=float, default=200.0, help="events/s during cycles")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    async with ServerProcess("service", url) as server, client(server.url) as http:
        created = await http.post(
            "/v1/sessions", json={"provider": "anthropic", "computer": {"type": "fake"}}
        )
        created.raise_for_status()
        sid = created.json()["id"]
        before = (await http.get(f"/v1/sessions/{sid}/events", params={"format": "json"})).json()
        base_seq = before["next_after"]
        reply = await http.post("/bench/fill", json={"session": sid, "count": args.events})
        reply.raise_for_status()
        count = base_seq + args.events
        await sse_replay(http, sid, count)  # warm-up
        await json_replay(http, sid, count)
        sse = [await sse_replay(http, sid, count) for _ in range(args.repeats)]
        pages = [await json_replay(http, sid, count) for _ in range(args.repeats)]
        published, reconnects = await live_cycles(http, sid, args.cycles, args.live_rate, count)

    sse_first = statistics.median(f for f, _ in sse) * 1000
    sse_rate = statistics.median(r for _, r in sse)
    json_first = statistics.median(f for f, _ in pages) * 1000
    json_rate = statistics.median(r for _, r in pages)
    print(f"database: {url.split(':', 1)[0]}; {count:,} stored events, median of {args.repeats}")
    print(f"{'':40}{'first event':>12}{'events/s':>10}")
    print(f"{'baseline: JSON pages of 1,000':40}{json_first:>9.1f} ms{json_rate:>10,.0f}")
    print(
        f"{'SSE replay (Last-Event-ID: 0)':40}{sse_first:>9.1f} ms{sse_rate:>10,.0f}"
        f"   x{sse_rate / json_rate:.2f} (targets: <= 50 ms, >= 20,000/s)"
    )
    ms = [r * 1000 for r in reconnects]
    print(
        f"live: {args.cycles} kill-and-reconnect cycles during {published:,} appends at "
        f"{args.live_rate:.0f}/s: reconnect -> first event p50 {statistics.median(ms):.1f} ms, "
        f"p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms; zero gaps, zero duplicates"
    )


if __name__ == "__main__":
    uvloop.run(main())
