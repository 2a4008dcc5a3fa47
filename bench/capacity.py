"""Capacity: how many active sessions one service process holds, and what each costs.

    .venv/bin/python -m bench.capacity [--sessions 1000] [--steps 5] [--latency 1.0] [--quick]
    .venv/bin/python -m bench.capacity --browser 5     # also real `browser` sessions

The service runs in its own process (SQLite file, WAL; MAX_ACTIVE_RUNS above
the session count), the fake Anthropic server in another, answering every
call after `--latency` seconds; this process creates `--sessions` sessions
with the `fake` computer at once, follows each over SSE and checks every
stored event arrived once, in order. Reports the wall time against the ideal
(steps x latency), the service's peak RSS minus its idle RSS per session, its
event-loop lag, and with `--browser N` the proportional memory (PSS, shared
pages split) of the service and its Chromium per real `browser` session.
Exits non-zero on a lost or duplicated event.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench import _harness as h


async def wave(svc: h.Child, sessions: int, steps: int, computer: str) -> dict[str, float]:
    async with h.client(svc.url) as http:
        await svc.command("reset")
        idle = await svc.command("stats")
        idle_pss = h.pss_tree_kb(svc.pid)
        gate = asyncio.Semaphore(50)

        async def start() -> h.Stream:
            async with gate:
                sid = await h.create_session(http, {"max_steps": steps + 5}, computer)
            return h.Stream(sid)

        wall0 = time.monotonic()
        streams = await asyncio.gather(*(start() for _ in range(sessions)))
        created = time.monotonic() - wall0
        followers = asyncio.gather(*(h.subscribe(http, s) for s in streams))
        peak_rss, peak_pss, peak_active = 0, 0, 0
        while not followers.done():
            stats = await svc.command("stats")
            peak_rss = max(peak_rss, int(stats["rss_kb"]))
            peak_active = max(peak_active, int(stats["active_runs"]))
            if computer != "fake":
                peak_pss = max(peak_pss, h.pss_tree_kb(svc.pid))
            await asyncio.sleep(0.5)
        await followers
        wall = time.monotonic() - wall0
        lag = await svc.command("stats")
        events = 0
        for stream in streams:
            await h.check_stored(http, stream)
            if stream.events[-1][1]["type"] != "run.completed":
                raise SystemExit(f"{stream.sid}: ended {stream.events[-1][1]['type']}")
            events += len(stream.events)
    return {
        "created_s": created,
        "wall_s": wall,
        "events": events,
        "peak_active": peak_active,
        "rss_per_session_kb": (peak_rss - int(idle["rss_kb"])) / sessions,
        "peak_rss_kb": peak_rss,
        "pss_per_session_kb": (peak_pss - idle_pss) / sessions if peak_pss else 0.0,
        "lag_p99_ms": lag["lag_p99_ms"],
        "lag_max_ms": lag["lag_max_ms"],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--browser", type=int, default=0, help="real browser sessions after")
    parser.add_argument("--quick", action="store_true", help="100 sessions, 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.steps = 100, 3
    url = await h.sqlite_url()
    ideal = (args.steps + 1) * args.latency
    async with (
        h.fake_provider(args.latency, args.steps) as fake,
        h.service(url, fake.url, max_active_runs=args.sessions + 10) as svc,
    ):
        r = await wave(svc, args.sessions, args.steps, "fake")
        print(
            f"{args.sessions} fake sessions x {args.steps} steps, model latency "
            f"{args.latency:.1f} s: all done in {r['wall_s']:.1f} s (ideal {ideal:.1f} s, "
            f"x{r['wall_s'] / ideal:.2f}; creating them took {r['created_s']:.1f} s); "
            f"peak {r['peak_active']:.0f} active runs; {r['events']:,.0f} events, every one "
            "delivered once, in order"
        )
        print(
            f"service RSS: peak {r['peak_rss_kb'] / 1024:.0f} MiB, "
            f"{r['rss_per_session_kb']:.0f} KiB per active session; event-loop lag "
            f"p99 {r['lag_p99_ms']:.1f} ms, max {r['lag_max_ms']:.1f} ms"
        )
        if args.browser:
            b = await wave(svc, args.browser, args.steps, "browser")
            per = b["pss_per_session_kb"] / 1024
            print(
                f"{args.browser} browser sessions x {args.steps} steps: done in "
                f"{b['wall_s']:.1f} s (ideal {ideal:.1f} s); service + Chromium PSS "
                f"{per:.0f} MiB per session -> {1024 / per if per else 0:.0f} sessions per GiB"
            )


if __name__ == "__main__":
    asyncio.run(main())
