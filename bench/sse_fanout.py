"""SSE fan-out: 100 sessions x 10 subscribers, each session publishing 10 events/s
(1,000 appends/s, 10,000 deliveries/s), persistence on; then each side's maximum.

    .venv/bin/python -m bench.sse_fanout [--sessions 100] [--subscribers 10] [--rate 10]
        [--seconds 20] [--warmup 3] [--ramp 20,40,80] [--step-seconds 5] [--database-url URL]

Servers run in a subprocess (bench._servers): the real service (events appended
through its EventLog, committed, published, streamed by GET /v1/sessions/{sid}/events;
SQLite in a temp dir unless --database-url) and the baseline, a bare uvicorn +
sse-starlette app fanning the same events out from memory. This process holds every
subscriber (httpx streaming, one connection each, uvloop), the same code for both.

Per step: deliveries/s (deliveries / time from publish start to last delivery) against
offered, and publish -> receive latency (CLOCK_MONOTONIC, shared by both processes).
Then `--ramp` per-session rates until delivered < 90% of offered: the maximum is the
best delivered rate seen. Exits non-zero on a lost, duplicated or out-of-order event.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop

from bench._client import ServerProcess, client, pct, sse_events


@dataclass
class Fanout:
    """Every subscriber's cursor plus the current step's deliveries and latencies."""

    last: dict[int, int] = field(default_factory=dict)
    delivered: int = 0
    last_at: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    want: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    async def subscriber(
        self, http: httpx.AsyncClient, index: int, sid: str, ready: asyncio.Event
    ) -> None:
        self.last[index] = 0
        async with http.stream(
            "GET", f"/v1/sessions/{sid}/events", headers={"Accept": "text/event-stream"}
        ) as response:
            async for event in sse_events(response):
                if event is None:
                    ready.set()
                    continue
                now = time.monotonic()
                seq = event["seq"]
                if seq != self.last[index] + 1:
                    self.errors.append(f"{sid}: {self.last[index]} -> {seq}")
                self.last[index] = seq
                t = event["data"].get("t")
                if t is not None:
                    self.latencies.append(now - t)
                    self.delivered += 1
                    self.last_at = now
                    if self.delivered >= self.want:
                        self.reached.set()


@dataclass
class Step:
    rate: float
    offered: float  # deliveries/s asked for
    published_rate: float  # appends/s the server managed to publish
    delivered_rate: float
    p50_ms: float
    p99_ms: float
    complete: bool


async def run_side(
    kind: str, args: argparse.Namespace, database_url: str | None
) -> tuple[Step, list[Step]]:
    async with ServerProcess(kind, database_url) as server, client(server.url) as http:
        sessions = []
        for _ in range(args.sessions):
            created = await http.post(
                "/v1/sessions", json={"provider": "anthropic", "computer": {"type": "fake"}}
            )
            created.raise_for_status()
            sessions.append(created.json()["id"])
        fan = Fanout()
        readies = []
        tasks = []
        for i in range(args.sessions * args.subscribers):
            ready = asyncio.Event()
            readies.append(ready)
            sid = sessions[i % args.sessions]
            tasks.append(asyncio.create_task(fan.subscriber(http, i, sid, ready)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # do not flood the accept queue
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)

        async def step(rate: float, seconds: float) -> Step:
            fan.delivered, fan.latencies, fan.want = 0, [], 1 << 62
            fan.reached.clear()
            start = time.monotonic()
            reply = await http.post(
                "/bench/publish", json={"sessions": sessions, "rate": rate, "seconds": seconds}
            )
            reply.raise_for_status()
            result = reply.json()
            want = result["published"] * args.subscribers
            fan.want = want
            if fan.delivered < want:
                try:
                    await asyncio.wait_for(fan.reached.wait(), 30)
                except TimeoutError:
                    pass
            elapsed = max(fan.last_at - start, 1e-9)
            return Step(
                rate,
                rate * len(sessions) * args.subscribers,
                result["published"] / result["publish_s"],
                fan.delivered / elapsed,
                statistics.median(fan.latencies) * 1000 if fan.latencies else float("nan"),
                pct(fan.latencies, 99) * 1000,
                fan.delivered == want,
            )

        warmup = await step(args.rate, args.warmup)  # new connections, caches: not measured
        main_step = await step(args.rate, args.seconds)
        show(kind, main_step)
        ramp = []
        for rate in args.ramp:
            measured = await step(rate, args.step_seconds)
            show(kind, measured)
            ramp.append(measured)
            if measured.delivered_rate < 0.9 * measured.offered or not measured.complete:
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if fan.errors:
            raise SystemExit(f"{kind}: GAP OR DUPLICATE: {fan.errors[:5]}")
        if not all(s.complete for s in [warmup, main_step, *ramp]):
            raise SystemExit(f"{kind}: LOST EVENTS (not every delivery arrived within 30 s)")
        return main_step, ramp


def show(kind: str, step: Step) -> None:
    print(
        f"  {kind:8} {step.rate:>5.0f}/s/session: offered {step.offered:>8,.0f} deliveries/s, "
        f"published {step.published_rate:>7,.0f} appends/s, delivered {step.delivered_rate:>8,.0f}"
        f"/s, p50 {step.p50_ms:.1f} ms, p99 {step.p99_ms:.1f} ms",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per session")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", default="20,40,80", help="per-session rates for the maximum")
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds at --rate, unmeasured")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    args.ramp = [float(r) for r in args.ramp.split(",") if r]
    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    print(
        f"{args.sessions} sessions x {args.subscribers} subscribers, {args.rate:.0f} events/s "
        f"per session for {args.seconds:.0f} s; service database {url.split(':', 1)[0]}"
    )
    base, base_ramp = await run_side("baseline", args, None)
    svc, svc_ramp = await run_side("service", args, url)
    ratio = svc.delivered_rate / base.delivered_rate
    print(
        f"at offered load: service delivers {ratio:.1%} of the baseline's rate "
        f"(target >= 90%); p99 {svc.p99_ms:.1f} ms vs {base.p99_ms:.1f} ms "
        f"= x{svc.p99_ms / base.p99_ms:.2f} (target <= x2)"
    )
    base_max = max(s.delivered_rate for s in [base, *base_ramp])
    svc_max = max(s.delivered_rate for s in [svc, *svc_ramp])
    print(
        f"maximum delivered: baseline {base_max:,.0f}/s, service {svc_max:,.0f}/s "
        f"(x{svc_max / base_max:.2f}); no event lost, duplicated or out of order"
    )


if __name__ == "__main__":
    uvloop.run(main())
