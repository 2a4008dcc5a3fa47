"""Two processes appending to one session at once on Postgres (SPEC v2.1, "Sequence
numbers"): seqs stay unique and gapless, and a stream in each process, fed by its own
appends and by the other's through the LISTEN bridge, receives every event once, in
order. Real processes (tests/events/appender.py), each with its own EventLog."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import repositories as repo
from app.events.log import EventLog
from tests.events.conftest import new_session
from tests.processes import POSTGRES_ONLY

pytestmark = [pytest.mark.slow, POSTGRES_ONLY]

PER_PROCESS = 300


# Blocking Popen/communicate on purpose: nothing else runs on this test's loop meanwhile.
async def test_two_processes_appending_to_one_session_keep_seq_gapless_and_streams_whole(
    event_log: EventLog, sessionmaker: async_sessionmaker[AsyncSession], clean_db: str
) -> None:
    await new_session(event_log, "ses_shared")  # seq 1
    total = 1 + 2 * PER_PROCESS
    processes = [
        subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                "-m",
                "tests.events.appender",
                clean_db,
                "ses_shared",
                name,
                str(PER_PROCESS),
                str(total),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for name in ("a", "b")
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.stderr
        started = time.monotonic()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120) for process in processes]
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        received = json.loads(out.strip().splitlines()[-1])
        assert received == list(range(1, total + 1))  # every event once, in seq order
    async with sessionmaker() as db:
        events = await repo.list_events(db, "ses_shared", 0, 10_000)
    assert [e.seq for e in events] == list(range(1, total + 1))
    by = [e.data["by"] for e in events[1:]]
    assert by.count("a") == by.count("b") == PER_PROCESS
    for name in ("a", "b"):  # each writer's appends kept their order
        assert [e.data["i"] for e in events[1:] if e.data["by"] == name] == list(range(PER_PROCESS))
    # Both wrote at the same time, not one after the other.
    switches = sum(1 for x, y in itertools.pairwise(by) if x != y)
    assert switches > 10, f"the writers barely interleaved ({switches} switches, {elapsed:.1f}s)"
