"""The real service in its own process, for benchmarks (not a benchmark itself).

    .venv/bin/python -m bench._service --database-url URL --anthropic-url URL [--max-active-runs N]

Serves create_app() under uvicorn on uvloop (as `agent-sessions serve` does) on a
loopback port (the tests' ServiceServer),
prints `URL <url>`, and measures its own event-loop lag: a task asks to sleep
10 ms and records how late it wakes. Commands on stdin, one a line:
`reset` (forget lag samples), `stats` (print one JSON line: lag percentiles,
RSS, CPU seconds, active runs), `emit {"sessions": [...], "rate": R, "seconds": S}`
(append `assistant.message` events to those sessions, round robin, R a second for S
seconds, through the service's own event log; answers `{"sent": N}` when all are
committed: bench.webhooks' event source), `quit`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

import uvloop

from app.events.log import EventLog
from app.lifespan import tune_gc_for_serving
from bench._harness import pct, rss_kb
from tests.conftest import ServiceServer, make_settings

TICK_S = 0.01


async def watch_lag(samples: list[float]) -> None:
    while True:
        started = time.perf_counter()
        await asyncio.sleep(TICK_S)
        samples.append((time.perf_counter() - started - TICK_S) * 1000)


def stats(samples: list[float], active: int) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "lag_p50_ms": pct(samples, 50) if samples else 0.0,
        "lag_p99_ms": pct(samples, 99) if samples else 0.0,
        "lag_max_ms": max(samples, default=0.0),
        "lag_samples": len(samples),
        "rss_kb": rss_kb(),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "active_runs": active,
    }


async def emit(log: EventLog, sessions: list[str], rate: float, seconds: float) -> int:
    """Paced appends (not closed-loop): event i is started at i / rate s."""
    total = int(rate * seconds)
    start = time.monotonic()
    appends = []
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        event = ("assistant.message", {"text": f"bench {i}"})
        appends.append(asyncio.create_task(log.append(sessions[i % len(sessions)], None, [event])))
    await asyncio.gather(*appends)
    return total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--anthropic-url", required=True)
    parser.add_argument("--max-active-runs", type=int, default=16)
    args = parser.parse_args()
    settings = make_settings(
        args.database_url,
        args.anthropic_url,
        max_active_runs=args.max_active_runs,
        provider_timeout_s=120.0,
        subscriber_queue_size=4096,
    )
    samples: list[float] = []
    async with ServiceServer(settings) as service:
        tune_gc_for_serving()  # as `agent-sessions serve` does after start-up
        watcher = asyncio.create_task(watch_lag(samples))
        print(f"URL {service.url}", flush=True)
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line == "reset":
                samples.clear()
                print("{}", flush=True)
            elif line.startswith("emit "):
                spec = json.loads(line[len("emit ") :])
                sent = await emit(
                    service.services.log, spec["sessions"], spec["rate"], spec["seconds"]
                )
                print(json.dumps({"sent": sent}), flush=True)
            elif line == "stats":
                active = service.services.runner.active_count
                print(json.dumps(stats(samples, active)), flush=True)
            else:  # quit, or the parent went away
                break
        watcher.cancel()


if __name__ == "__main__":
    uvloop.run(main())  # as `agent-sessions serve` runs (uvicorn picks uvloop)
