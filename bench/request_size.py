"""Provider request size per turn over a long session: image retention + caching against
keeping every image, through the real service in the same run.

    .venv/bin/python -m bench.request_size [--turns 60] [--retention 3] [--turn-retention 10]

The service (in this process under uvicorn, fake computer, SQLite in a temp dir)
runs one session of `--turns` model calls against the fake Anthropic server
(each reply a screenshot action, the last a final text), once with
`image_retention` = `--retention` and prompt caching on, once keeping every
image (the baseline: retention 100, caching on), and once more with
`turn_retention` = `--turn-retention` as well. For each request the fake
received it reports the JSON body's bytes, its images, and the estimated input
tokens (text: chars / 4; each image: width * height / 750, Anthropic's rule),
plus the cached-prefix share (cache_read / all input tokens) from the usage the
fake's deterministic prompt cache returned in `turn.completed`. Exits non-zero
if a request carries more images than turn 10's plus one chunk, if with
turn_retention a request of the session's last third is larger than the largest
of its middle third (plus the omitted-turns note), or if an event is lost or
duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.agents.anthropic_transcript import TURNS_OMITTED
from app.computers.scaling import png_size
from app.db.engine import migrate
from bench import _harness as h
from tests.conftest import ServiceServer, make_settings
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    computer_call,
    text_message,
    tool_use_message,
)

PIXELS_PER_TOKEN = 750
NOTE_BYTES = len(TURNS_OMITTED) + 8  # the omitted-turns note in the first message


@dataclass
class Turn:
    bytes_: int
    images: int
    image_tokens: int
    text_tokens: int
    cached_share: float
    uncached: int  # input + cache-write tokens, as the fake's prompt cache billed them


def image_sources(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        if value.get("type") == "image" and isinstance(value.get("source"), dict):
            return [value["source"]]
        return [s for v in value.values() for s in image_sources(v)]
    if isinstance(value, list):
        return [s for v in value for s in image_sources(v)]
    return []


def measure(body: dict[str, Any], usage: dict[str, Any]) -> Turn:
    sources = image_sources(body)
    sizes = [png_size(base64.b64decode(s["data"])) for s in sources]
    raw = json.dumps(body, separators=(",", ":"))
    image_chars = sum(len(s["data"]) for s in sources)
    read = usage.get("cache_read_input_tokens") or 0
    total = (
        (usage.get("input_tokens") or 0) + read + (usage.get("cache_creation_input_tokens") or 0)
    )
    return Turn(
        bytes_=len(raw.encode()),
        images=len(sources),
        image_tokens=sum(w * ht // PIXELS_PER_TOKEN for w, ht in sizes),
        text_tokens=(len(raw) - image_chars) // 4,
        cached_share=read / total if total else 0.0,
        uncached=total - read,
    )


async def session(turns: int, retention: int, turn_retention: int | None = None) -> list[Turn]:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    await migrate(url)
    with FakeAnthropic() as fake:
        # In order (one session): with turn_retention the request no longer shows how
        # many turns came before, so the replies cannot be chosen by counting them.
        fake.enqueue(
            *[tool_use_message(computer_call("screenshot")) for _ in range(turns - 1)],
            text_message("Done."),
        )
        async with ServiceServer(make_settings(url, fake.base_url)) as svc:
            options = {
                "max_steps": turns + 5,
                "image_retention": retention,
                "prompt_caching": True,
            }
            if turn_retention is not None:
                options["turn_retention"] = turn_retention
            sid = await h.create_session(svc.client, options)
            stream = await h.subscribe(svc.client, h.Stream(sid))
            await h.check_stored(svc.client, stream)
        bodies = [r.body for r in fake.requests]
    usages = [e["data"]["usage"] for _, e in stream.events if e["type"] == "turn.completed"]
    if len(bodies) != turns or len(usages) != turns:
        raise SystemExit(f"expected {turns} requests, got {len(bodies)} ({len(usages)} turns)")
    return [measure(b, u) for b, u in zip(bodies, usages, strict=True)]


def show(name: str, rows: list[Turn], marks: list[int]) -> None:
    print(name)
    print(f"{'turn':>6}{'bytes':>10}{'images':>8}{'img tok':>9}{'text tok':>10}{'cached':>8}")
    for n in marks:
        t = rows[n - 1]
        print(
            f"{n:>6}{t.bytes_:>10,}{t.images:>8}{t.image_tokens:>9,}{t.text_tokens:>10,}"
            f"{t.cached_share:>8.0%}"
        )
    total_in = sum(t.image_tokens + t.text_tokens for t in rows)
    cached = sum(t.cached_share * (t.image_tokens + t.text_tokens) for t in rows)
    print(
        f"  whole session: {sum(t.bytes_ for t in rows):,} bytes sent, ~{total_in:,} input "
        f"tokens, cached-prefix share {cached / total_in:.0%}, "
        f"{sum(t.uncached for t in rows):,} tokens not read from cache"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--retention", type=int, default=3)
    parser.add_argument("--turn-retention", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="30 turns, turn_retention 5")
    args = parser.parse_args()
    if args.quick:
        args.turns = 30
        args.turn_retention = min(args.turn_retention, 5)  # trimming reaches steady state
    retained = await session(args.turns, args.retention)
    every = await session(args.turns, 100)
    trimmed = await session(args.turns, args.retention, args.turn_retention)
    marks = sorted({1, 2, 5, 10, *range(20, args.turns + 1, 10), args.turns})
    show(f"image_retention {args.retention}, caching on:", retained, marks)
    show("baseline: every image kept (retention 100), caching on:", every, marks)
    show(
        f"image_retention {args.retention} + turn_retention {args.turn_retention}, caching on:",
        trimmed,
        marks,
    )
    last, tenth = retained[-1], retained[9]
    chunk = args.retention  # the default chunk for retention <= 50
    most = max(t.images for t in retained)
    print(
        f"turn {args.turns} vs turn 10: images {last.images} vs {tenth.images} (max over the "
        f"session {most}, bound {tenth.images + chunk}); bytes x{last.bytes_ / tenth.bytes_:.2f}; "
        f"baseline turn {args.turns}: {every[-1].images} images, "
        f"x{every[-1].bytes_ / last.bytes_:.1f} the bytes, "
        f"x{(every[-1].image_tokens + every[-1].text_tokens) / (last.image_tokens + last.text_tokens):.1f}"
        " the tokens"
    )
    # Both windows are past the first cut: the last third must be no larger than the
    # middle third (plus the note's growing count) if the size has stopped growing.
    third = args.turns // 3
    middle_max = max(t.bytes_ for t in trimmed[third : 2 * third])
    last_max = max(t.bytes_ for t in trimmed[2 * third :])
    one_chunk = trimmed[min(9 + chunk, args.turns - 1)]  # turn 10 + one chunk of turns
    print(
        f"turn_retention {args.turn_retention}: turn {args.turns} {trimmed[-1].bytes_:,} bytes; "
        f"max of turns {2 * third + 1}-{args.turns} {last_max:,} vs max of turns "
        f"{third + 1}-{2 * third} {middle_max:,}; turn 10 {trimmed[9].bytes_:,}, turn "
        f"{10 + chunk} (turn 10 + one chunk) {one_chunk.bytes_:,}: turn {args.turns} is "
        f"x{trimmed[-1].bytes_ / one_chunk.bytes_:.2f} of it"
    )
    if most > tenth.images + chunk:
        raise SystemExit("IMAGES NOT BOUNDED")
    if last_max > middle_max + NOTE_BYTES:
        raise SystemExit("BYTES NOT BOUNDED WITH turn_retention")


if __name__ == "__main__":
    asyncio.run(main())
