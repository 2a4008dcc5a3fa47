"""Orchestration overhead per step: the real service against the same loop called directly.

    .venv/bin/python -m bench.step_overhead [--steps 40] [--concurrent 200]
        [--single-passes 5] [--quick]

A step is one model call plus one action (a screenshot) and its screenshot,
with a 0 ms fake model (bench._fake_provider, its own process) and the `fake`
computer. Service: the real service in its own process (SQLite file, WAL),
this process as the SSE client; a step's time is the gap between consecutive
`tool.result` events of a session as the client receives them. Baseline: the
same AnthropicLoop called in this process with the tests' in-memory RunContext
(MemoryContext), against the same fake provider; a step's time is the gap
between consecutive `tool.result` events it emits. Both are run with one
session (`--single-passes` runs one after another, their steps pooled), then
with `--concurrent` sessions at once. Overhead = service -
baseline. Also prints CPU ms per step (service process vs this process for the
baseline) and the service's event-loop lag. Exits non-zero on a lost or
duplicated event.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anthropic

from app.agents.anthropic import AnthropicLoop
from app.agents.base import Event
from app.computers.fake import FakeComputer
from app.lifespan import tune_gc_for_serving
from bench import _harness as h
from tests.agents.conftest import MemoryContext, make_config


@dataclass
class Pass:
    steps_ms: list[float]
    cpu_ms_per_step: float
    wall_s: float
    lag: dict[str, Any] | None = None


class TimedContext(MemoryContext):
    """MemoryContext that notes when each tool.result is emitted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result_times: list[float] = []

    def _note(self, types: Sequence[str]) -> None:
        now = time.monotonic()
        self.result_times.extend(now for t in types if t == "tool.result")

    async def emit(self, type_: str, data: dict[str, Any]) -> int:
        self._note([type_])
        return await super().emit(type_, data)

    async def checkpoint(
        self, state: dict[str, Any], events: Sequence[Event] = (), *, defer: bool = False
    ) -> None:
        self._note([t for t, _ in events])
        await super().checkpoint(state, events, defer=defer)


def gaps(times: list[float]) -> list[float]:
    return [(b - a) * 1000 for a, b in itertools.pairwise(times)]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def baseline(fake_url: str, sessions: int, steps: int) -> Pass:
    # No SDK retries, like the service's client: a failed call must fail the pass, not be
    # absorbed (and timed) as a slow step.
    sdk = anthropic.AsyncAnthropic(base_url=fake_url, api_key="test-key", max_retries=0)
    loop = AnthropicLoop(sdk)

    async def one(i: int) -> TimedContext:
        config = make_config(session_id=f"ses_{i}", computer_type="fake", max_steps=steps + 5)
        ctx = TimedContext(config, FakeComputer(config.display))
        await loop.run(ctx, {}, "benchmark", resumed=False)
        if len(ctx.result_times) != steps:
            raise SystemExit(f"baseline session {i}: {len(ctx.result_times)} of {steps} steps")
        return ctx

    cpu0, wall0 = cpu_s(), time.monotonic()
    contexts = await asyncio.gather(*(one(i) for i in range(sessions)))
    cpu1, wall1 = cpu_s(), time.monotonic()
    await sdk.close()
    steps_ms = [g for ctx in contexts for g in gaps(ctx.result_times)]
    return Pass(steps_ms, (cpu1 - cpu0) * 1000 / (sessions * steps), wall1 - wall0)


async def through_service(svc: h.Child, sessions: int, steps: int) -> Pass:
    async with h.client(svc.url) as http:
        before = await svc.command("reset")
        before = await svc.command("stats")
        wall0 = time.monotonic()
        sids = await asyncio.gather(
            *(h.create_session(http, {"max_steps": steps + 5}) for _ in range(sessions))
        )
        streams = await asyncio.gather(*(h.subscribe(http, h.Stream(sid)) for sid in sids))
        wall1 = time.monotonic()
        after = await svc.command("stats")
        for stream in streams:
            await h.check_stored(http, stream)
            if len(stream.times_of("tool.result")) != steps:
                raise SystemExit(f"{stream.sid}: {len(stream.times_of('tool.result'))} steps")
    steps_ms = [g for s in streams for g in gaps(s.times_of("tool.result"))]
    cpu = (after["cpu_s"] - before["cpu_s"]) * 1000 / (sessions * steps)
    return Pass(steps_ms, cpu, wall1 - wall0, after)


def joined(passes: list[Pass]) -> Pass:
    """One-session passes run one after another, as one sample: their step times
    together (more than one pass's few dozen, so that p99 is not just the maximum)."""
    wall = sum(p.wall_s for p in passes)
    cpu = statistics.mean(p.cpu_ms_per_step for p in passes)  # passes of equal length
    return Pass([ms for p in passes for ms in p.steps_ms], cpu, wall, passes[-1].lag)


def row(name: str, p: Pass, base: Pass | None = None) -> str:
    p50, p99 = statistics.median(p.steps_ms), h.pct(p.steps_ms, 99)
    text = f"{name:34}{p50:>9.2f}{p99:>9.2f}{p.cpu_ms_per_step:>10.2f}"
    if base is not None:
        b50, b99 = statistics.median(base.steps_ms), h.pct(base.steps_ms, 99)
        text += f"   overhead p50 {p50 - b50:+.2f} ms, p99 {p99 - b99:+.2f} ms (x{p50 / b50:.1f})"
    return text


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument(
        "--single-passes", type=int, default=5, help="one-session runs, one after another"
    )
    parser.add_argument("--quick", action="store_true", help="10 steps, 20 concurrent sessions")
    parser.add_argument(
        "--database-url", help="the service's database (default: a fresh SQLite file)"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.concurrent, args.single_passes = 10, 20, 1
    if args.database_url and args.database_url.startswith("postgresql"):
        async with h.scratch_database(args.database_url) as url:
            await measure(args, url)
    else:
        await measure(args, args.database_url or await h.sqlite_url())


async def measure(args: argparse.Namespace, url: str) -> None:
    tune_gc_for_serving()  # the baseline's process collects as the service's does
    async with h.fake_provider(0.0, args.steps) as fake:
        await baseline(fake.url, 1, args.steps)  # warm-up (imports, connections)
        base_1 = joined(
            [await baseline(fake.url, 1, args.steps) for _ in range(args.single_passes)]
        )
        base_n = await baseline(fake.url, args.concurrent, args.steps)
        async with h.service(url, fake.url, max_active_runs=args.concurrent + 10) as svc:
            await through_service(svc, 1, args.steps)  # warm-up
            svc_1 = joined(
                [await through_service(svc, 1, args.steps) for _ in range(args.single_passes)]
            )
            svc_n = await through_service(svc, args.concurrent, args.steps)
    print(
        f"per-step time, ms ({args.steps} steps per session, 0 ms model and computer); "
        "CPU ms per step"
    )
    print(f"{'':34}{'p50':>9}{'p99':>9}{'CPU/step':>10}")
    print(row("baseline: loop direct, 1 session", base_1))
    print(row("service, 1 session", svc_1, base_1))
    print(row(f"baseline: loop direct, {args.concurrent} sess.", base_n))
    print(row(f"service, {args.concurrent} sessions", svc_n, base_n))
    for name, p in (("1 session", svc_1), (f"{args.concurrent} sessions", svc_n)):
        lag = p.lag or {}
        total = args.steps * (args.single_passes if p is svc_1 else args.concurrent)
        print(
            f"service event-loop lag, {name}: p50 {lag.get('lag_p50_ms', 0):.1f} ms, "
            f"p99 {lag.get('lag_p99_ms', 0):.1f} ms, max {lag.get('lag_max_ms', 0):.1f} ms; "
            f"{total / p.wall_s:,.0f} steps/s"
        )
    print("every event delivered once, in order")


if __name__ == "__main__":
    asyncio.run(main())
