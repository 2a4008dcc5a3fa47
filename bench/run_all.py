"""Run every benchmark of issue 5 (1-7) one after another, each in its own process,
then bench.viewer (SPEC v2.2, real Chromium), with a Postgres URL also
bench.replicas (SPEC v2.1, Postgres only), bench.metrics_scrape (SPEC v2.4) and
bench.idempotency (SPEC v2.3).

    .venv/bin/python -m bench.run_all [--quick] [--database-url URL] [--only a,b]

Without --database-url, each runs on a fresh SQLite file; with a Postgres URL, the
same database is used by every benchmark (its tables are wiped: never point it at a
database you need), except bench.replicas, which only connects to it to create and
drop scratch databases of its own (`--only replicas` without a URL uses its default,
the local Postgres), as do bench.metrics_scrape and bench.idempotency. `--quick` is a short smoke version (seconds instead of minutes;
its figures are not measurements). Exits non-zero as soon as one benchmark does
(a lost or duplicated event, or a crash).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

FULL: dict[str, list[str]] = {
    "event_append": [],
    "sse_fanout": [],
    "resume": [],
    "step_overhead": [],
    "cancel_latency": [],
    "request_size": [],
    "capacity": [],
    "viewer": [],
    "replicas": [],
    "metrics_scrape": [],
    "idempotency": [],
}
QUICK: dict[str, list[str]] = {
    "event_append": ["--seconds", "2", "--rate", "1000"],
    "sse_fanout": "--sessions 10 --subscribers 3 --seconds 2 --ramp 40 --step-seconds 1".split(),
    "resume": ["--events", "1000", "--repeats", "1", "--cycles", "10"],
    "step_overhead": ["--quick"],
    "cancel_latency": ["--quick"],
    "request_size": ["--quick"],
    "capacity": ["--quick"],
    "viewer": ["--loads", "2", "--events", "1000", "--seconds", "2"],
    "replicas": ["--quick"],
    "metrics_scrape": ["--quick"],
    "idempotency": ["--quick"],
}
# The benchmarks that take --database-url (the others run on a fresh SQLite file).
TAKES_DATABASE = frozenset(
    {"event_append", "sse_fanout", "resume", "replicas", "metrics_scrape", "idempotency"}
)
# Run by default only when --database-url is a Postgres URL.
POSTGRES_ONLY = frozenset({"replicas"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(FULL))
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    on_postgres = (args.database_url or "").startswith("postgres")
    names = (
        args.only.split(",")
        if args.only
        else [name for name in plan if on_postgres or name not in POSTGRES_ONLY]
    )
    for name in names:
        argv = [sys.executable, "-m", f"bench.{name}", *plan[name]]
        if args.database_url and name in TAKES_DATABASE:
            argv += ["--database-url", args.database_url]
        print(f"== {name}: {' '.join(argv[1:])}", flush=True)
        code = subprocess.call(argv)
        if code != 0:
            print(f"== {name} FAILED (exit {code})", flush=True)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
