"""A webhook receiver in its own process, for bench.webhooks (not a benchmark itself).

    .venv/bin/python -m bench._webhook_receiver

Answers every POST with 200 and notes (wall-clock arrival, webhook-id, the event's
created_at, attempt signature valid?). Prints `URL <url>`, then takes commands on
stdin, one a line, each answered by one JSON line: `down` (stop listening: connections
are refused, the port stays reserved), `up` (listen again), `take` (up to 400 of the arrivals
noted and not yet taken), `quit`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime

from standardwebhooks import Webhook

from tests.fakes.webhook_receiver import SECRET, Received, WebhookReceiver

# Every this-many-th body is verified with standardwebhooks (all of them would make the
# receiver, not the service, the bottleneck).
VERIFY_EVERY = 50
TAKE_MAX = 400


class Notes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[float, str, float, bool]] = []
        self.count = 0
        self.verifier = Webhook(SECRET)

    def responder(self, request: Received, so_far: list[Received]) -> int:
        arrived = time.time()
        event = json.loads(request.body)
        created = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00"))
        with self.lock:
            self.count += 1
            check = self.count % VERIFY_EVERY == 1
        valid = True
        if check:
            try:
                self.verifier.verify(request.body, request.headers)
            except Exception:
                valid = False
        with self.lock:
            self.rows.append((arrived, request.headers["webhook-id"], created.timestamp(), valid))
        return 200

    def take(self) -> list[tuple[float, str, float, bool]]:
        with self.lock:  # a bounded answer: a line must fit the reader's buffer (64 KiB)
            rows, self.rows = self.rows[:TAKE_MAX], self.rows[TAKE_MAX:]
            return rows


def main() -> None:
    notes = Notes()
    receiver = WebhookReceiver(notes.responder)
    receiver.bind().start()
    port = receiver.port
    print(f"URL {receiver.url}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        with receiver._lock:  # the requests themselves are not needed here
            receiver.received.clear()
        if command == "down":
            receiver.stop()
            receiver = WebhookReceiver(notes.responder)
            rebind(receiver, port)
            print("{}", flush=True)
        elif command == "up":
            receiver.start()
            print("{}", flush=True)
        elif command == "take":
            print(json.dumps(notes.take()), flush=True)
        else:
            break
    receiver.stop()


def rebind(receiver: WebhookReceiver, port: int) -> None:
    """Bind the same port again, without listening (connections refused)."""
    for _ in range(100):
        try:
            receiver.bind(port)
            return
        except OSError:
            time.sleep(0.05)  # the old socket's close is still settling
    raise SystemExit(f"could not bind port {port} again")


if __name__ == "__main__":
    main()
