"""GET /metrics scrape time with 1,000 sessions and 100 active runs, beside GET /healthz
(the baseline: the same server, connection and load, no work of its own) and beside
both on the idle service, all in one run.

    .venv/bin/python -m bench.metrics_scrape [--sessions 1000] [--runs 100] [--scrapes 300]
                                             [--database-url URL] [--quick]

The service runs in its own process (bench._service: uvicorn on uvloop, fake computer,
SQLite in a temp dir, or a scratch Postgres database next to --database-url's) against
the fake Anthropic server in a third process (bench._fake_provider), which answers
every request after 1 s with another screenshot action, so the runs keep stepping
(about `--runs` steps a second in all) while the scrapes happen. This process is the
scraper: first on the idle service, then after creating `--sessions` sessions, of
which `--runs` with a task, once the service's own gauge says that many runs are
active, it alternates GET /healthz and GET /metrics on one keep-alive connection
and reports p50/p99/max of each, the size of the exposition and its number of
samples. Exits non-zero when a scrape fails, does not parse, or does not show the
active runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import _harness as h

PROVIDER_DELAY_S = 1.0
STEPS = 100_000  # a run never finishes during the benchmark
CREATE_CONCURRENCY = 20


def samples_of(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


async def timed_get(http: httpx.AsyncClient, path: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await http.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
    return elapsed, response


async def alternate(http: httpx.AsyncClient, scrapes: int) -> dict[str, list[float]]:
    """`scrapes` of each path, alternating, so both meet the same conditions."""
    times: dict[str, list[float]] = {"/healthz": [], "/metrics": []}
    for _ in range(scrapes):
        for path in times:
            elapsed, _ = await timed_get(http, path)
            times[path].append(elapsed)
    return times


def report(phase: str, times: dict[str, list[float]], body: str) -> None:
    count = len(samples_of(body))
    print(f"{phase}: /metrics is {len(body.encode()):,} bytes, {count} samples")
    print(f"  {'GET':<10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for path, values in times.items():
        print(f"  {path:<10}{h.pct(values, 50):>9.2f}{h.pct(values, 99):>9.2f}{max(values):>9.2f}")
    extra = h.pct(times["/metrics"], 50) - h.pct(times["/healthz"], 50)
    print(f"  /metrics costs {extra:+.2f} ms at p50 over /healthz")


async def create(http: httpx.AsyncClient, sessions: int, runs: int) -> None:
    semaphore = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(index: int) -> None:
        body: dict[str, object] = {"provider": "anthropic", "computer": {"type": "fake"}}
        if index < runs:
            body |= {"task": "benchmark", "options": {"max_steps": 1000, "image_retention": 1}}
        async with semaphore:
            response = await http.post("/v1/sessions", json=body)
        if response.status_code != 201:
            raise SystemExit(f"create: {response.status_code} {response.text[:200]}")

    await asyncio.gather(*(one(i) for i in range(sessions)))


def actions(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("agent_sessions_action_seconds_count"))


async def wait_stepping(http: httpx.AsyncClient, runs: int, within: float = 180.0) -> None:
    """Until `runs` runs are active and have taken two actions each on average (their
    model calls, actions and tokens are in the exposition)."""
    deadline = time.monotonic() + within
    while True:
        _, response = await timed_get(http, "/metrics")
        samples = samples_of(response.text)
        active = samples.get("agent_sessions_runs_active{}", 0.0)
        if active == runs and actions(samples) >= 2 * runs:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{active:g} of {runs} runs active, {actions(samples):g} actions")
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def database(url: str | None) -> AsyncIterator[str]:
    if url is None:
        yield await h.sqlite_url()
    else:
        async with h.scratch_database(url) as scratch:
            yield scratch


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--database-url", default=None, help="Postgres: a scratch database")
    parser.add_argument("--quick", action="store_true", help="100 sessions, 10 runs, 30 scrapes")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.runs, args.scrapes = 100, 10, 30
    async with (
        database(args.database_url) as url,
        h.fake_provider(PROVIDER_DELAY_S, STEPS) as fake,
        h.service(url, fake.url, max_active_runs=args.runs) as svc,
        h.client(svc.url) as http,
    ):
        await alternate(http, 10)  # warm-up: connections, first-request imports
        idle = await alternate(http, args.scrapes)
        _, response = await timed_get(http, "/metrics")
        report("idle (no session)", idle, response.text)

        started = time.monotonic()
        await create(http, args.sessions, args.runs)
        await wait_stepping(http, args.runs)
        print(
            f"\ncreated {args.sessions} sessions, {args.runs} runs active and stepping "
            f"({time.monotonic() - started:.1f} s)"
        )
        loaded = await alternate(http, args.scrapes)
        _, response = await timed_get(http, "/metrics")
        samples = samples_of(response.text)
        if samples.get("agent_sessions_runs_active{}") != args.runs:
            raise SystemExit("the active runs left before the scrapes ended")
        report(f"{args.sessions} sessions, {args.runs} active runs", loaded, response.text)
        print(f"  (the runs had executed {actions(samples):g} actions by the last scrape)")


if __name__ == "__main__":
    asyncio.run(main())
