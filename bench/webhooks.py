"""Webhooks: commit -> delivered at a steady rate, and how fast a backlog drains.

    .venv/bin/python -m bench.webhooks [--rate 100] [--seconds 30] [--outage 60]
        [--database-url URL] [--quick]

The service runs in its own process (bench._service: uvicorn on uvloop, the start-up
heap frozen), the receiver in another (bench._webhook_receiver: answers 200, notes
each arrival's wall-clock time, checks one signature in 50 with standardwebhooks), and
this process is the client. It creates `--sessions` sessions over HTTP whose webhook
asks for `assistant.message`; then the service's own event log appends that event to
them, round robin, `--rate` a second, paced (bench._service `emit`: the cheapest real
source of committed events, so the figures are the webhook path's and not those of
whatever makes the events; a create request costs twice a delivery's CPU).

- Latency: the event's `created_at` (stamped in the transaction that commits it) to
  its arrival at the receiver; one machine, one clock.
- Baseline, same run, same receiver: this process signs the same kind of body and POSTs
  it straight to the receiver at the same rate; `created_at` is the moment before the
  send. The floor of any delivery (signing, HTTP on loopback, the receiver).
- Control: the same appends to sessions whose webhook asks for another type (no
  outbox row): the service's CPU per event without a delivery.
- Backlog: the receiver stops listening (connections refused, keep-alive connections
  cut) for `--outage` seconds while events keep coming at `--rate`; then it listens
  again. Each session's events queue behind its oldest (seq order). Drain rate = the
  backlog / the time from "up" to its last event's arrival. The retry delay is 1 s
  (WEBHOOK_RETRY_DELAYS_S=1,1,...), so what is measured is the worker's throughput,
  not the retry schedule (with the default 5,30,120... the last row would wait for its
  next scheduled attempt, up to minutes).

Postgres runs in a scratch database (`bench_<hex>`) next to `--database-url`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from bench import _harness as h
from tests.fakes.webhook_receiver import SECRET

RETRY_DELAYS = ",".join(["1"] * 200)
DIRECT_CONCURRENCY = 64


def arrival_latencies_ms(rows: list[list[Any]]) -> list[float]:
    return [(arrived - created) * 1000 for arrived, _id, created, _valid in rows]


async def paced(rate: float, seconds: float, send: Any) -> tuple[int, float]:
    """Call `send(i)` `rate` times a second for `seconds` (as tasks, at most
    DIRECT_CONCURRENCY in flight); (how many, the achieved rate)."""
    total = int(rate * seconds)
    gate = asyncio.Semaphore(DIRECT_CONCURRENCY)
    tasks = []
    start = time.monotonic()

    async def one(i: int) -> None:
        async with gate:
            await send(i)

    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return total, total / (time.monotonic() - start)


async def collect(receiver: h.Child, expected: int, within: float) -> list[list[Any]]:
    """Arrivals until `expected` distinct events have arrived (duplicates kept)."""
    rows: list[list[Any]] = []
    ids: set[str] = set()
    deadline = time.monotonic() + within
    while len(ids) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(ids)} of {expected} events delivered in {within} s")
        taken = await receiver_take(receiver)
        if not taken:
            await asyncio.sleep(0.2)
        rows.extend(taken)
        ids.update(row[1] for row in taken)
    return rows


async def receiver_take(receiver: h.Child) -> list[list[Any]]:
    assert receiver.proc is not None and receiver.proc.stdin is not None
    assert receiver.proc.stdout is not None
    receiver.proc.stdin.write(b"take\n")
    await receiver.proc.stdin.drain()
    line = await receiver.proc.stdout.readline()
    rows: list[list[Any]] = json.loads(line)
    return rows


async def sessions_with(http: httpx.AsyncClient, url: str, events: list[str], n: int) -> list[str]:
    body = {
        "provider": "anthropic",
        "computer": {"type": "fake"},
        "webhook": {"url": url, "events": events},
    }
    ids = []
    for _ in range(n):
        response = await http.post("/v1/sessions", json=body)
        if response.status_code != 201:
            raise SystemExit(f"create failed: {response.status_code} {response.text}")
        ids.append(response.json()["id"])
    return ids


async def emit(svc: h.Child, sessions: list[str], rate: float, seconds: float) -> int:
    spec = {"sessions": sessions, "rate": rate, "seconds": seconds}
    reply = await svc.command("emit " + json.dumps(spec))
    sent: int = reply["sent"]
    return sent


def direct_sender(http: httpx.AsyncClient, url: str) -> Any:
    signer = Webhook(SECRET)

    async def send(i: int) -> None:
        now = datetime.now(UTC)
        event = {
            "seq": 1,
            "type": "session.created",
            "session_id": f"ses_direct_{i}",
            "run_id": None,
            "created_at": now.isoformat().replace("+00:00", "Z"),
            "data": {"provider": "anthropic", "model": "claude-sonnet-4-6", "metadata": {}},
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        msg_id = f"msg_direct_{i}"
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, body),
            "content-type": "application/json",
        }
        response = await http.post(url, content=body, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"direct POST: {response.status_code}")

    return send


def row(name: str, latencies: list[float], base: list[float] | None = None) -> str:
    p50, p99 = statistics.median(latencies), h.pct(latencies, 99)
    text = f"{name:44}{p50:>9.2f}{p99:>9.2f}{max(latencies):>9.2f}"
    if base is not None:
        b50, b99 = statistics.median(base), h.pct(base, 99)
        text += f"   overhead p50 {p50 - b50:+.2f} ms, p99 {p99 - b99:+.2f} ms"
    return text


async def measure(args: argparse.Namespace, database_url: str) -> None:
    os.environ.update(
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_ALLOW_PRIVATE="true",  # the receiver is on loopback
        WEBHOOK_RETRY_DELAYS_S=RETRY_DELAYS,
    )
    async with (
        h.Child("bench._webhook_receiver") as receiver,
        h.fake_provider(0.0, 1) as fake,
        h.service(database_url, fake.url) as svc,
        h.client(svc.url) as http,
        httpx.AsyncClient(timeout=30) as direct,
    ):
        hooked = await sessions_with(http, receiver.url, ["assistant.message"], args.sessions)
        quiet = await sessions_with(http, receiver.url, ["run.completed"], args.sessions)
        await emit(svc, hooked, 50, 1)  # warm-up: connections, caches
        await collect(receiver, 50, 60)

        control_0 = await svc.command("stats")
        control_n = await emit(svc, quiet, args.rate, min(args.seconds, 10.0))
        control_1 = await svc.command("stats")

        sent, base_rate = await paced(args.rate, args.seconds, direct_sender(direct, receiver.url))
        base = await collect(receiver, sent, 60)

        await svc.command("reset")
        before = await svc.command("stats")
        sent = await emit(svc, hooked, args.rate, args.seconds)
        steady = await collect(receiver, sent, 120)
        after = await svc.command("stats")

        await receiver.command("down")
        backlog = await emit(svc, hooked, args.rate, args.outage)
        up_at = time.time()
        await receiver.command("up")
        drained = await collect(receiver, backlog, 600)

    base_ms, steady_ms = arrival_latencies_ms(base), arrival_latencies_ms(steady)
    print(
        f"commit -> delivered, ms ({args.rate:g} events/s for {args.seconds:g} s over "
        f"{args.sessions} sessions: {len(steady_ms)} events; baseline sent at {base_rate:.0f}/s)"
    )
    print(f"{'':44}{'p50':>9}{'p99':>9}{'max':>9}")
    print(row("baseline: signed POST straight to receiver", base_ms))
    print(row("service: event commit -> receiver", steady_ms, base_ms))
    cpu_ms = (after["cpu_s"] - before["cpu_s"]) * 1000 / len(steady_ms)
    control_ms = (control_1["cpu_s"] - control_0["cpu_s"]) * 1000 / control_n
    print(
        f"service CPU per event: {cpu_ms:.2f} ms with its delivery, {control_ms:.2f} ms "
        f"without (control, same rate): the delivery's share {cpu_ms - control_ms:.2f} ms; "
        f"event-loop lag p99 {after['lag_p99_ms']:.1f} ms"
    )
    last = max(arrived for arrived, *_ in drained)
    first = min(arrived for arrived, *_ in drained if arrived >= up_at)
    distinct = len({row[1] for row in drained})
    print(
        f"backlog: receiver down {args.outage:g} s at {args.rate:g} events/s -> {distinct} "
        f"events waiting ({distinct // args.sessions} per session); after it came back: first delivery {1000 * (first - up_at):.0f} ms "
        f"later, all delivered in {last - up_at:.2f} s = {distinct / (last - up_at):,.0f} "
        f"events/s (duplicates: {len(drained) - distinct})"
    )
    if not all(valid for rows in (base, steady, drained) for *_, valid in rows):
        raise SystemExit("A SIGNATURE DID NOT VERIFY")
    print("every event delivered; one signature in 50 checked with standardwebhooks: valid")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="10 s steady, 10 s outage")
    parser.add_argument(
        "--database-url", help="the service's database (default: a fresh SQLite file)"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.outage = 10.0, 10.0
    if args.database_url and args.database_url.startswith("postgresql"):
        async with h.scratch_database(args.database_url) as url:
            await measure(args, url)
    else:
        await measure(args, args.database_url or await h.sqlite_url())


if __name__ == "__main__":
    asyncio.run(main())
