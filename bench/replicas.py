"""Replicas on one Postgres (SPEC v2.1), measured with real `agent-sessions serve` processes.

    .venv/bin/python -m bench.replicas [--only fanout,takeover,handoff,claim] [--quick]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

Each part runs on a scratch database created through --database-url
(`bench_<hex>`, dropped at the end; nothing else in that server is touched).
The replicas are subprocesses, each in its own process group and temporary
directory (so no `.env` is read), stopped by pid. Model calls go to the tests'
fake Anthropic server, in this process on its own thread, which answers by the
run's task (`bench-<part>-<n>`); the computer is `fake`.

1. fanout: replicas A and B (bench._replica: `serve` plus a route that appends through
   A's EventLog at a clock-paced rate, as bench.sse_fanout offers its load). 100
   sessions x 10 SSE subscribers, 10 events/s per session for 20 s after a 3 s
   warm-up. Baseline: the subscribers on A, the appending replica; then the same
   load with them on B, where every event arrives through NOTIFY and a read of the
   database. Latency: publish (the CLOCK_MONOTONIC time each event carries) ->
   receipt here. Targets: delivered >= 99% of offered, p99 on B <= 2x p99 on A.
2. takeover: a run inside a held model call (after one click), SIGKILL of its owner;
   time to `run.resumed` (reason takeover) on the other replica, from the event's
   created_at and the kill's wall-clock time (one machine clock). Beside it, the
   wait the lease imposes by design (kill -> the lease's expiry, read from the
   database after the kill) and the rest (expiry -> resumed). Target LEASE_TTL_S + 5 s.
   The killed replica is replaced by a fresh one (new REPLICA_ID) for the next trial.
3. handoff: SIGTERM of the owner while its run waits for a model reply, which comes
   0.3 s later (well within SHUTDOWN_GRACE_S); the owner runs the action, stops at
   the step boundary and releases the lease. Time from its last committed event to
   `run.resumed` (reason handoff) on the other replica. Beside it, the same runs'
   run.queued -> run.started (a claim on one replica, no hand-off). Target 2 s.
4. claim: 1,000 runs (one model reply each, a text that ends the run) created across
   3 replicas while every model reply is held, so each replica fills MAX_ACTIVE_RUNS
   and the rest wait queued; then the replies are released and the replicas drain
   the queue. Runs completed per second (release -> last run's end) against 1
   replica draining the same number. Every run: one run.started, no run.resumed, one
   terminal event, run.completed; the fake saw each run's first request once.

Exits non-zero when an event is lost, duplicated or out of order, or a run was
executed twice, failed or never ended; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from sqlalchemy.engine import make_url

from bench._client import client, pct
from bench._harness import scratch_database
from bench.sse_fanout import Fanout
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    computer_call,
    text_message,
    tool_use_message,
)

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PARTS = ("fanout", "takeover", "handoff", "claim")
SERVE = Path(sys.executable).with_name("agent-sessions")
REPO = Path(__file__).resolve().parent.parent
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
START_TIMEOUT_S = 60.0
HOLD_MAX_S = 300.0  # a held model reply is released by then whatever happens
TERMINAL = ("run.completed", "run.failed", "run.cancelled")
TASK = re.compile(r"bench-(claim|takeover|handoff)-(\d+)")


def lost(message: str) -> SystemExit:
    """A lost, duplicated or out-of-order event, or a run executed twice: exit non-zero."""
    return SystemExit(f"FAILED: {message}")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f})"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:.2f} s"


# ---- the database ------------------------------------------------------------------------


@asynccontextmanager
async def sql(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    url = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        yield connection
    finally:
        await connection.close()


# ---- replicas --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core; idle and iowait excluded)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def all_cpu_s() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                found[int(entry.name)] = (name, cpu_s(int(entry.name)))
    return found


class Meter:
    """Cores used over a stretch of time by some processes, by Postgres (every backend
    that lived through it, whatever its database) and by everything else on the
    machine (the rest of its busy time: other work, short-lived processes)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.reset()

    def reset(self) -> None:
        self._started = time.monotonic()
        self._processes = all_cpu_s()
        self._machine = machine_busy_s()

    def cores(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._started
        now, machine = all_cpu_s(), machine_busy_s() - self._machine
        used = {}
        for name, pid in self.pids.items():
            used[name] = now[pid][1] - self._processes[pid][1] if pid in now else 0.0
        used["postgres"] = sum(
            cpu - self._processes[pid][1]
            for pid, (command, cpu) in now.items()
            if command == "postgres" and pid in self._processes
        )
        used["rest"] = machine - sum(used.values())
        used["machine"] = machine
        return {name: seconds / elapsed for name, seconds in used.items()}


def show_cores(cores: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {used:.2f}" for name, used in cores.items())
    return f"CPU in cores: {parts} (of {os.cpu_count()})"


class Replica:
    """One `agent-sessions serve` (or bench._replica) in its own process group."""

    def __init__(self, name: str, env: dict[str, str], directory: Path, wrapper: bool) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{name}.log"
        argv = [sys.executable, "-m", "bench._replica"] if wrapper else [str(SERVE), "serve"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
                env={**env, "REPLICA_ID": name},
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.http = httpx.AsyncClient(base_url=self.url, timeout=30)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited during start-up:\n{self.output()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await self.http.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not become ready")
            await asyncio.sleep(0.05)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the service process itself (a crash)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, within: float) -> int:
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} still runs {within:.0f} s after SIGTERM")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    async def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (start_new_session)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        await self.http.aclose()


class Cluster:
    """Replicas sharing one database and one fake model; every one stopped on exit."""

    def __init__(
        self,
        database_url: str,
        settings: dict[str, str],
        model_url: str = "",
        wrapper: bool = False,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
        self.env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        self.env.update(
            DATABASE_URL=database_url,
            ANTHROPIC_API_KEY="bench",
            ENABLE_FAKE_COMPUTER="true",
            API_KEYS="",
            PROVIDER_MAX_RETRIES="0",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(REPO),
            **settings,
        )
        if model_url:
            self.env["ANTHROPIC_BASE_URL"] = model_url
        self.wrapper = wrapper
        self.started: list[Replica] = []

    async def start(self) -> Replica:
        replica = Replica(
            f"replica-{len(self.started) + 1}", self.env, self.directory, self.wrapper
        )
        self.started.append(replica)
        await replica.wait_ready()
        return replica

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for replica in self.started:
            await replica.close()
        if exc_type is None:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            print(f"  (the replicas' logs are in {self.directory})", flush=True)


def settings_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    return {
        "LEASE_TTL_S": str(args.lease_ttl),
        "LEASE_RENEW_S": str(args.lease_renew),
        "CLAIM_INTERVAL_S": str(args.claim_interval),
        "SHUTDOWN_GRACE_S": str(args.shutdown_grace),
        **extra,
    }


# ---- the fake model --------------------------------------------------------------------------


class Gate:
    """Opened from any thread, awaited on the fake's event loop (its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def open(self) -> None:
        with self._lock:
            self._open = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def wait(self, within: float = HOLD_MAX_S) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._open:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()


class Model:
    """The fake Anthropic server answering every request by its run's task
    (`bench-<kind>-<n>`) and its turn (the assistant messages in the request):

    - claim: held until `go` opens, then a text that ends the run;
    - takeover: a click; then the first request of turn 1 is held (its owner is
      killed meanwhile), and the next owner's request is answered with a text;
    - handoff: a click; turn 1 held until the run's gate opens, then a click;
      turn 2 a text.

    `calls` counts requests per (kind, n, turn), so a run asked twice shows."""

    def __init__(self) -> None:
        self.fake = FakeAnthropic()
        self.calls: Counter[tuple[str, int, int]] = Counter()
        self.go = Gate()
        self._gates: dict[str, Gate] = {}

    @contextmanager
    def serving(self, replies: int) -> Iterator[Model]:
        self.fake.start()
        self.fake.enqueue(*([self.reply] * replies))
        try:
            yield self
        finally:
            for gate in [self.go, *self._gates.values()]:
                gate.open()
            self.fake.stop()

    @property
    def url(self) -> str:
        return self.fake.base_url

    def gate(self, task: str) -> Gate:
        return self._gates.setdefault(task, Gate())

    async def reply(self, request: RecordedRequest) -> dict[str, Any]:
        messages = request.body["messages"]
        found = TASK.search(json.dumps(messages[0]))
        if found is None:
            raise ValueError("a request without a bench task")
        kind, n = found.group(1), int(found.group(2))
        turn = sum(1 for m in messages if m["role"] == "assistant")
        self.calls[(kind, n, turn)] += 1
        task = found.group(0)
        if kind == "claim":
            await self.go.wait()
            return text_message("Done.")
        if turn == 0:
            return tool_use_message(computer_call("left_click", coordinate=[10, 20]))
        if kind == "takeover":
            if turn == 1 and self.calls[(kind, n, 1)] == 1:
                await self.gate(task).wait()  # its owner dies meanwhile
            return text_message("Done after the takeover.")
        if turn == 1:
            await self.gate(task).wait()
            return tool_use_message(computer_call("left_click", coordinate=[30, 40]))
        return text_message("Done after the hand-off.")

    async def wait_calls(self, key: tuple[str, int, int], count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while self.calls[key] < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"the fake model never got request {key}")
            await asyncio.sleep(0.01)


# ---- sessions and events over HTTP -----------------------------------------------------------


async def create_run(http: httpx.AsyncClient, task: str) -> tuple[str, str]:
    response = await http.post(
        "/v1/sessions",
        json={"provider": "anthropic", "task": task, "computer": {"type": "fake"}},
    )
    if response.status_code not in (201, 202):
        raise SystemExit(f"session create failed: {response.status_code} {response.text}")
    body = response.json()
    return body["id"], body["active_run_id"]


async def events_of(http: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await http.get(
            f"/v1/sessions/{sid}/events", params={"format": "json", "after": after, "limit": 1000}
        )
        response.raise_for_status()
        page = response.json()
        events.extend(page["data"])
        after = page["next_after"]
        if not page["has_more"]:
            return events


async def wait_run(http: httpx.AsyncClient, sid: str, rid: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        run: dict[str, Any] = (await http.get(f"/v1/sessions/{sid}/runs/{rid}")).json()
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        if time.monotonic() > deadline:
            raise lost(f"run {rid} still {run['status']} after {within:.0f} s")
        await asyncio.sleep(0.05)


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["created_at"])


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def check_run_log(
    what: str, log: list[dict[str, Any]], run: dict[str, Any], clicks: int
) -> list[dict[str, Any]]:
    """The run's log is gapless, started once, ended once (completed), resumed once, and
    ran each click once; returns its run.resumed events."""
    if [e["seq"] for e in log] != list(range(1, len(log) + 1)):
        raise lost(f"{what}: seqs not gapless: {[e['seq'] for e in log]}")
    seen = Counter(kinds(log))
    resumed = [e for e in log if e["type"] == "run.resumed"]
    if seen["run.started"] != 1 or sum(seen[t] for t in TERMINAL) != 1 or len(resumed) != 1:
        raise lost(f"{what}: {kinds(log)}")
    if run["status"] != "completed":
        raise lost(f"{what}: the run ended {run['status']}: {run.get('error')}")
    if seen["tool.call"] != clicks or seen["tool.result"] != clicks:
        raise lost(f"{what}: {seen['tool.call']} actions instead of {clicks}: {kinds(log)}")
    return resumed


# ---- 1. fan-out across replicas ---------------------------------------------------------------


@dataclass
class FanStep:
    offered: int  # deliveries asked for: events published x subscribers
    delivered: int
    offered_rate: float  # deliveries/s
    delivered_rate: float
    latencies: list[float] = field(repr=False)
    cores: dict[str, float] = field(default_factory=dict)
    reads_per_s: float = 0.0  # scans of the events table (a bridge's or a stream's read)

    def line(self) -> str:
        lat = self.latencies
        return (
            f"delivered {self.delivered:,} of {self.offered:,} "
            f"({self.delivered / self.offered:.2%}), {self.delivered_rate:,.0f}/s of "
            f"{self.offered_rate:,.0f}/s offered; latency p50 {statistics.median(lat) * 1000:.1f}"
            f" ms, p99 {pct(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms; "
            f"{show_cores(self.cores)}; events table read {self.reads_per_s:,.0f} times/s"
        )


async def events_scans(stats: asyncpg.Connection) -> int:
    scans: int = await stats.fetchval(
        "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables "
        "WHERE relname = 'events'"
    )
    return scans


async def fan_pass(
    label: str,
    publisher: httpx.AsyncClient,
    readers: httpx.AsyncClient,
    meter: Meter,
    stats: asyncpg.Connection,
    args: argparse.Namespace,
) -> FanStep:
    """Sessions created and appended to on the publisher; subscribers on `readers`."""
    sessions = []
    for _ in range(args.sessions):
        created = await publisher.post(
            "/v1/sessions", json={"provider": "anthropic", "computer": {"type": "fake"}}
        )
        created.raise_for_status()
        sessions.append(created.json()["id"])
    fan = Fanout()
    readies, tasks = [], []
    subscribed_to = {}
    for i in range(args.sessions * args.subscribers):
        ready = asyncio.Event()
        readies.append(ready)
        subscribed_to[i] = sessions[i % args.sessions]
        tasks.append(asyncio.create_task(fan.subscriber(readers, i, subscribed_to[i], ready)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)

    async def step(seconds: float) -> FanStep:
        fan.delivered, fan.latencies, fan.want = 0, [], 1 << 62
        fan.reached.clear()
        scans = await events_scans(stats)
        start = time.monotonic()
        meter.reset()
        reply = await publisher.post(
            "/bench/publish", json={"sessions": sessions, "rate": args.rate, "seconds": seconds}
        )
        reply.raise_for_status()
        published = reply.json()["published"]
        fan.want = published * args.subscribers
        cores = meter.cores()  # while publishing
        if fan.delivered < fan.want:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fan.reached.wait(), 30)
        done = time.monotonic()
        await asyncio.sleep(1.5)  # backends report their statistics within a second of idling
        reads = (await events_scans(stats) - scans) / (done - start)
        return FanStep(
            fan.want,
            fan.delivered,
            args.rate * args.sessions * args.subscribers,
            fan.delivered / max(fan.last_at - start, 1e-9),
            list(fan.latencies),
            cores,
            reads,
        )

    await step(args.warmup)  # new connections, caches: not measured
    measured = await step(args.seconds)
    print(f"  {label}: {measured.line()}", flush=True)
    await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if fan.errors:
        raise lost(f"{label}: gap or duplicate: {fan.errors[:5]}")
    stored = {}
    for sid in sessions:
        stored[sid] = (await publisher.get(f"/v1/sessions/{sid}")).json()["last_event_seq"]
    behind = [i for i, sid in subscribed_to.items() if fan.last[i] != stored[sid]]
    if behind or measured.delivered != measured.offered:
        raise lost(
            f"{label}: {measured.offered - measured.delivered} deliveries missing 30 s after "
            f"the last publish; {len(behind)} subscribers short of the stored last seq"
        )
    return measured


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"fanout: {args.sessions} sessions x {args.subscribers} subscribers, {args.rate:g} "
        f"events/s per session for {args.seconds:g} s (+{args.warmup:g} s warm-up); {load()}",
        flush=True,
    )
    async with (
        scratch_database(args.database_url) as url,
        Cluster(url, settings_env(args), wrapper=True) as cluster,
    ):
        a = await cluster.start()
        async with client(a.url) as on_a, sql(url) as stats:
            # For reference: one replica with no peer sends no NOTIFY and reads nothing back.
            meter = Meter({"A": a.proc.pid, "clients": os.getpid()})
            await fan_pass("A alone, no other replica (reference)", on_a, on_a, meter, stats, args)
            b = await cluster.start()
            await asyncio.sleep(1.0)  # A has heard B's hello: it notifies from now on
            meter = Meter({"A": a.proc.pid, "B": b.proc.pid, "clients": os.getpid()})
            async with client(b.url) as on_b:
                base = await fan_pass(
                    "subscribers on A, B up (baseline)", on_a, on_a, meter, stats, args
                )
                cross = await fan_pass(
                    "subscribers on B (cross-replica)", on_a, on_b, meter, stats, args
                )
    ratio = pct(cross.latencies, 99) / pct(base.latencies, 99)
    share = cross.delivered / cross.offered
    print(
        f"  cross-replica: delivered {share:.2%} (target >= 99%: "
        f"{'met' if share >= 0.99 else 'MISSED'}); p99 x{ratio:.2f} of the baseline's "
        f"(target <= x2: {'met' if ratio <= 2 else 'MISSED'}); no event lost, duplicated "
        f"or out of order; {load()}",
        flush=True,
    )
    return {"base": base, "cross": cross}


# ---- 2. takeover after SIGKILL, 3. hand-off on SIGTERM ----------------------------------------


async def owner_of(pair: list[Replica], sid: str) -> tuple[Replica, Replica, list[dict[str, Any]]]:
    """(owner, the other, the log so far), the owner named by run.started."""
    log = await events_of(pair[0].http, sid)
    (started,) = [e for e in log if e["type"] == "run.started"]
    owner = next(r for r in pair if r.name == started["data"]["replica"])
    return owner, next(r for r in pair if r is not owner), log


async def lease_expiry(url: str, rid: str) -> datetime:
    async with sql(url) as db:
        expires: datetime = await db.fetchval(
            "SELECT lease_expires_at FROM runs WHERE id = $1", rid
        )
    return expires


async def takeover(args: argparse.Namespace) -> dict[str, Any]:
    target = args.lease_ttl + 5
    print(
        f"takeover: {args.trials} trials, LEASE_TTL_S={args.lease_ttl:g} "
        f"LEASE_RENEW_S={args.lease_renew:g} CLAIM_INTERVAL_S={args.claim_interval:g}; {load()}",
        flush=True,
    )
    to_resumed: list[float] = []
    to_expiry: list[float] = []
    model = Model()
    async with scratch_database(args.database_url) as url:
        with model.serving(args.trials * 4 + 100):
            async with Cluster(url, settings_env(args), model.url) as cluster:
                pair = [await cluster.start(), await cluster.start()]
                for n in range(args.trials):
                    task = f"bench-takeover-{n}"
                    sid, rid = await create_run(pair[n % 2].http, task)
                    await model.wait_calls(("takeover", n, 1), 1, within=60)
                    owner, other, _ = await owner_of(pair, sid)
                    # Anywhere in the renewal cycle, as a crash would be.
                    await asyncio.sleep(random.uniform(0, args.lease_renew))
                    before = await events_of(other.http, sid)
                    killed_at = datetime.now(UTC)  # the clock the replicas stamp events with
                    owner.kill()
                    expires = await lease_expiry(url, rid)
                    run = await wait_run(other.http, sid, rid, within=target + 60)
                    log = await events_of(other.http, sid)
                    model.gate(task).open()
                    (resumed,) = check_run_log(f"takeover {n}", log, run, clicks=1)
                    if resumed["data"] != {"reason": "takeover", "replica": other.name}:
                        raise lost(f"takeover {n}: {resumed['data']}")
                    if log[: len(before)] != before:
                        raise lost(f"takeover {n}: committed events changed after the kill")
                    if model.calls[("takeover", n, 0)] != 1 or model.calls[("takeover", n, 1)] != 2:
                        raise lost(f"takeover {n}: model calls {dict(model.calls)}")
                    took = (at(resumed) - killed_at).total_seconds()
                    to_resumed.append(took)
                    to_expiry.append((expires - killed_at).total_seconds())
                    print(
                        f"  trial {n + 1:>2}: resumed on {other.name} {took:.2f} s after the "
                        f"kill (lease expired {to_expiry[-1]:.2f} s after it)",
                        flush=True,
                    )
                    await owner.close()
                    pair = [other, await cluster.start()]  # a fresh REPLICA_ID
    after_expiry = [r - e for r, e in zip(to_resumed, to_expiry, strict=True)]
    p50, worst = statistics.median(to_resumed), max(to_resumed)
    print(
        f"  kill -> run.resumed (takeover): p50 {p50:.2f} s, max {worst:.2f} s (target "
        f"<= {target:g} s: {'met' if worst <= target else 'MISSED'})\n"
        f"  of which kill -> lease expiry (by design, TTL minus the time since the last "
        f"renewal): p50 {statistics.median(to_expiry):.2f} s, max {max(to_expiry):.2f} s; "
        f"expiry -> resumed: p50 {statistics.median(after_expiry):.2f} s, max "
        f"{max(after_expiry):.2f} s\n"
        f"  every run completed on the new owner, its click run once; {load()}",
        flush=True,
    )
    return {"resumed": to_resumed, "expiry": to_expiry}


async def handoff(args: argparse.Namespace) -> dict[str, Any]:
    target = 2.0
    print(f"handoff: {args.handoff_trials} trials; {load()}", flush=True)
    gaps: list[float] = []
    claims: list[float] = []
    model = Model()
    async with scratch_database(args.database_url) as url:
        with model.serving(args.handoff_trials * 4 + 100):
            async with Cluster(url, settings_env(args), model.url) as cluster:
                pair = [await cluster.start(), await cluster.start()]
                for n in range(args.handoff_trials):
                    task = f"bench-handoff-{n}"
                    sid, rid = await create_run(pair[n % 2].http, task)
                    await model.wait_calls(("handoff", n, 1), 1, within=60)
                    owner, other, _ = await owner_of(pair, sid)
                    owner.terminate()
                    await asyncio.sleep(0.3)
                    model.gate(task).open()  # the reply comes during the drain
                    code = await owner.wait_exit(within=args.shutdown_grace + 30)
                    run = await wait_run(other.http, sid, rid, within=60)
                    log = await events_of(other.http, sid)
                    (resumed,) = check_run_log(f"handoff {n}", log, run, clicks=2)
                    if resumed["data"] != {"reason": "handoff", "replica": other.name}:
                        raise lost(f"handoff {n}: {resumed['data']}")
                    if any(model.calls[("handoff", n, turn)] != 1 for turn in range(3)):
                        raise lost(f"handoff {n}: model calls {dict(model.calls)}")
                    if code != 0:
                        print(f"  ({owner.name} exited {code} after SIGTERM)", flush=True)
                    last = log[log.index(resumed) - 1]
                    gaps.append((at(resumed) - at(last)).total_seconds())
                    queued, started = (
                        next(e for e in log if e["type"] == t)
                        for t in ("run.queued", "run.started")
                    )
                    claims.append((at(started) - at(queued)).total_seconds())
                    print(
                        f"  trial {n + 1:>2}: {owner.name}'s last event ({last['type']}) -> "
                        f"run.resumed on {other.name}: {ms(gaps[-1])}",
                        flush=True,
                    )
                    await owner.close()
                    pair = [other, await cluster.start()]
    worst = max(gaps)
    print(
        f"  last event of the owner -> run.resumed (handoff): p50 "
        f"{ms(statistics.median(gaps))}, max {ms(worst)} (target <= {target:g} s: "
        f"{'met' if worst <= target else 'MISSED'})\n"
        f"  baseline, run.queued -> run.started on one replica: p50 "
        f"{ms(statistics.median(claims))}, max {ms(max(claims))}\n"
        f"  every run completed on the new owner, each click run once; {load()}",
        flush=True,
    )
    return {"gaps": gaps, "claims": claims}


# ---- 4. claiming queued runs ------------------------------------------------------------------


async def check_claimed(url: str, runs: int, model: Model) -> dict[str, int]:
    """Every run started once, never resumed, ended once (completed); the fake saw each
    run's first request once; every session's log is gapless. Runs started per replica."""
    async with sql(url) as db:
        statuses = dict(await db.fetch("SELECT status, count(*) FROM runs GROUP BY status"))
        per_run = await db.fetch(
            "SELECT run_id, count(*) FILTER (WHERE type = 'run.started') AS started, "
            "count(*) FILTER (WHERE type = 'run.resumed') AS resumed, "
            "count(*) FILTER (WHERE type IN ('run.completed', 'run.failed', 'run.cancelled')) "
            "AS ended FROM events WHERE run_id IS NOT NULL GROUP BY run_id"
        )
        gapped = await db.fetch(
            "SELECT session_id FROM events GROUP BY session_id "
            "HAVING count(*) <> max(seq) OR count(DISTINCT seq) <> count(*)"
        )
        by_replica = dict(
            await db.fetch(
                "SELECT data->>'replica', count(*) FROM events WHERE type = 'run.started' "
                "GROUP BY 1 ORDER BY 1"
            )
        )
    if statuses != {"completed": runs}:
        raise lost(f"claim: runs by status {statuses}")
    odd = [dict(r) for r in per_run if (r["started"], r["resumed"], r["ended"]) != (1, 0, 1)]
    if odd or len(per_run) != runs:
        raise lost(f"claim: {len(odd)} runs started/resumed/ended not (1, 0, 1): {odd[:5]}")
    if gapped:
        raise lost(f"claim: {len(gapped)} sessions with a gap or a duplicate seq")
    asked = {key: count for key, count in model.calls.items() if count != 1 or key[2] != 0}
    if asked or len(model.calls) != runs:
        raise lost(f"claim: model requests not one per run: {list(asked.items())[:5]}")
    return by_replica


@dataclass
class Drained:
    seconds: float  # from the release of the replies to the last run's end
    created_s: float  # creating the runs (while every reply was held)
    by_replica: dict[str, int]  # run.started per replica
    cores: dict[str, float]  # while draining


async def claim_pass(args: argparse.Namespace, replicas: int) -> Drained:
    model = Model()
    async with scratch_database(args.database_url) as url:
        with model.serving(args.runs * 2 + 100):
            env = settings_env(args, MAX_ACTIVE_RUNS=str(args.max_active_runs))
            async with Cluster(url, env, model.url) as cluster:
                up = [await cluster.start() for _ in range(replicas)]
                started = time.monotonic()
                room = asyncio.Semaphore(16)

                async def create(i: int) -> None:
                    async with room:
                        await create_run(up[i % replicas].http, f"bench-claim-{i}")

                await asyncio.gather(*(create(i) for i in range(args.runs)))
                created_s = time.monotonic() - started
                held = min(args.runs, replicas * args.max_active_runs)
                deadline = time.monotonic() + 60
                while sum(model.calls.values()) < held:  # every replica is full
                    if time.monotonic() > deadline:
                        raise SystemExit(f"only {sum(model.calls.values())} of {held} runs began")
                    await asyncio.sleep(0.05)
                print(f"  {load()} before the release", flush=True)
                pids = {r.name.replace("replica-", "R"): r.proc.pid for r in up}
                meter = Meter({**pids, "bench+fake model": os.getpid()})
                released_at = datetime.now(UTC)
                model.go.open()
                async with sql(url) as db:
                    deadline = time.monotonic() + args.runs + 120
                    while True:
                        ended = await db.fetchval(
                            "SELECT count(*) FROM runs WHERE status IN "
                            "('completed', 'failed', 'cancelled')"
                        )
                        if ended >= args.runs:
                            break
                        if time.monotonic() > deadline:
                            raise lost(f"claim: only {ended} of {args.runs} runs ended")
                        await asyncio.sleep(0.2)
                    cores = meter.cores()
                    last: datetime = await db.fetchval("SELECT max(ended_at) FROM runs")
                by_replica = await check_claimed(url, args.runs, model)
    return Drained((last - released_at).total_seconds(), created_s, by_replica, cores)


async def claim(args: argparse.Namespace) -> dict[int, float]:
    print(
        f"claim: {args.runs} runs, MAX_ACTIVE_RUNS={args.max_active_runs} per replica; {load()}",
        flush=True,
    )
    results: dict[int, float] = {}
    for replicas in (1, args.replicas):
        drained = await claim_pass(args, replicas)
        results[replicas] = args.runs / drained.seconds
        print(
            f"  {replicas} replica{'s' if replicas > 1 else ''}: {results[replicas]:,.1f} runs/s "
            f"({args.runs} drained in {drained.seconds:.2f} s; created in "
            f"{drained.created_s:.1f} s); run.started per replica "
            f"{sorted(drained.by_replica.values(), reverse=True)}; "
            f"{show_cores(drained.cores)}; {load()}",
            flush=True,
        )
    print(
        f"  {args.replicas} replicas vs 1: x{results[args.replicas] / results[1]:.2f}; every run "
        f"started once, never resumed, completed once, asked of the model once",
        flush=True,
    )
    return results


# ---- main ------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "fanout": fanout,
    "takeover": takeover,
    "handoff": handoff,
    "claim": claim,
}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--quick", action="store_true", help="a smaller version of each part")
    parser.add_argument("--database-url", default=DEFAULT_URL, help="where to create scratch DBs")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per session")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--trials", type=int, default=20, help="takeover trials")
    parser.add_argument("--handoff-trials", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1000, help="claim: queued runs")
    parser.add_argument("--replicas", type=int, default=3, help="claim: replicas draining")
    parser.add_argument("--max-active-runs", type=int, default=16)
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--lease-renew", type=float, default=2.0)
    parser.add_argument("--claim-interval", type=float, default=1.0)
    parser.add_argument("--shutdown-grace", type=float, default=10.0)
    args = parser.parse_args()
    if not make_url(args.database_url).drivername.startswith("postgresql"):
        raise SystemExit("bench.replicas needs Postgres (--database-url postgresql+asyncpg://...)")
    if args.quick:
        args.sessions, args.subscribers, args.seconds, args.warmup = 20, 5, 5.0, 2.0
        args.trials, args.handoff_trials, args.runs = 3, 3, 200
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    for part in parts:
        await RUNNERS[part](args)


if __name__ == "__main__":
    uvloop.run(main())
