"""The fake Anthropic server in its own process, for benchmarks (not a benchmark itself).

    .venv/bin/python -m bench._fake_provider --delay 1.0 --steps 10

Every request is answered after `--delay` seconds: a `screenshot` computer call
while the request carries fewer than `--steps` assistant messages, then a final
text. Prints `URL <base_url>` once serving and runs until stdin closes.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    computer_call,
    text_message,
    tool_use_message,
)

TOP_UP = 20_000


def step_responder(steps: int) -> Any:
    """A reply for any request of a run that should take `steps` actions."""

    def reply(request: RecordedRequest) -> dict[str, Any]:
        taken = sum(1 for m in request.body["messages"] if m["role"] == "assistant")
        if taken < steps:
            return tool_use_message(computer_call("screenshot"))
        return text_message("Done.")

    return reply


def keep_fed(fake: FakeAnthropic, steps: int, delay: float, stop: threading.Event) -> None:
    """Keep the scripted queue non-empty (each reply is one queue entry)."""
    responder = step_responder(steps)
    while not stop.is_set():
        if fake.pending < TOP_UP:
            fake.enqueue(*([responder] * TOP_UP), delay=delay)
        with fake._lock:  # recorded bodies are never read here: do not let them pile up
            fake._requests.clear()
        stop.wait(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    stop = threading.Event()
    with FakeAnthropic() as fake:
        feeder = threading.Thread(
            target=keep_fed, args=(fake, args.steps, args.delay, stop), daemon=True
        )
        feeder.start()
        while fake.pending == 0:
            time.sleep(0.01)
        print(f"URL {fake.base_url}", flush=True)
        sys.stdin.read()  # until the parent closes the pipe
        stop.set()


if __name__ == "__main__":
    main()
