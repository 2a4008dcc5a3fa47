"""POST latency with and without an Idempotency-Key (SPEC v2.3), in the same run.

    .venv/bin/python -m bench.idempotency [--requests 1000] [--concurrency 1]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

The service runs in its own process (bench._service: uvicorn on uvloop, as `serve`
runs it), the client in this one. Each request is `POST /v1/sessions` without a
task (a session row and its `session.created` event: the cheapest POST that writes),
sent in three interleaved kinds so that all three see the same machine:

- baseline: no Idempotency-Key;
- keyed: a new key each time (claim the key, run the request, store its answer:
  two more commits through the event log's writer, and the answer is sent only
  after the second);
- replay: a key already answered (one commit, no session created).

`--concurrency` clients send at once (1: one request at a time, the latency of the
path itself). Prints p50 / p99 / mean per kind, and the keyed overhead over the
baseline. SQLite in a temp dir by default; with a Postgres URL a scratch database
(`bench_<hex>`) is created next to it and dropped at the end. Exits non-zero if a
keyed request is not answered 201, or a replay is not the first answer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from bench import _harness as h

BODY = {"provider": "anthropic", "computer": {"type": "fake"}}
KINDS = ("baseline", "keyed", "replay")


@asynccontextmanager
async def database(url: str | None) -> AsyncIterator[str]:
    if url and url.startswith("postgres"):
        async with h.scratch_database(url) as scratch:
            yield scratch
    else:
        yield await h.sqlite_url()


async def one(http: httpx.AsyncClient, kind: str, replay_key: str) -> float:
    headers = {}
    if kind == "keyed":
        headers["Idempotency-Key"] = uuid.uuid4().hex
    elif kind == "replay":
        headers["Idempotency-Key"] = replay_key
    started = time.perf_counter()
    response = await http.post("/v1/sessions", json=BODY, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 201:
        raise SystemExit(f"{kind}: {response.status_code} {response.text}")
    if kind == "replay" and response.headers.get("Idempotent-Replayed") != "true":
        raise SystemExit("a replay was not marked Idempotent-Replayed")
    return elapsed


async def measure(
    http: httpx.AsyncClient, requests: int, concurrency: int
) -> dict[str, list[float]]:
    first = await http.post("/v1/sessions", json=BODY, headers={"Idempotency-Key": "replayed"})
    if first.status_code != 201:
        raise SystemExit(f"first keyed request: {first.status_code} {first.text}")
    for kind in KINDS:  # warm-up: connections, caches, the first statements
        for _ in range(20):
            await one(http, kind, "replayed")
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    plan = list(itertools.islice(itertools.cycle(KINDS), requests * len(KINDS)))
    queue: asyncio.Queue[str] = asyncio.Queue()
    for kind in plan:
        queue.put_nowait(kind)

    async def client() -> None:
        while not queue.empty():
            kind = queue.get_nowait()
            samples[kind].append(await one(http, kind, "replayed"))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples


def row(name: str, values: list[float], note: str = "") -> str:
    return (
        f"   {name:<9} p50 {h.pct(values, 50):6.2f} ms   p99 {h.pct(values, 99):6.2f} ms"
        f"   mean {statistics.fmean(values):6.2f} ms   ({len(values)}){note}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="per kind")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--quick", action="store_true", help="100 requests per kind")
    args = parser.parse_args()
    requests = 100 if args.quick else args.requests
    async with (
        database(args.database_url) as url,
        h.fake_provider(0.0, 1) as provider,
        h.service(url, provider.url) as service,
        h.client(service.url) as http,
    ):
        samples = await measure(http, requests, args.concurrency)
    backend = "Postgres" if url.startswith("postgres") else "SQLite"
    print(
        f"POST /v1/sessions (no task), {backend}, {requests} requests per kind, "
        f"{args.concurrency} at a time, interleaved"
    )
    base = samples["baseline"]
    for kind in KINDS:
        note = ""
        if kind != "baseline":
            p50 = h.pct(samples[kind], 50) - h.pct(base, 50)
            p99 = h.pct(samples[kind], 99) - h.pct(base, 99)
            note = f"   vs baseline: p50 {p50:+.2f} ms, p99 {p99:+.2f} ms"
        print(row(kind, samples[kind], note))


if __name__ == "__main__":
    asyncio.run(main())
