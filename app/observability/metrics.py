"""The Prometheus series of one service (SPEC v2.4), in a registry of its own.

A registry per app, not prometheus_client's global one: tests (and benchmarks) start
many apps in one process, and each must count only its own work. Label values are
bounded: providers and statuses come from closed sets, models from the price table
(`other` for the rest), computer kinds and action types from the normalized actions;
never an id.

The gauges are read when scraped (`watch`): the runner's active runs and leases, the
broker's subscribers. Nothing updates them on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The service's usage keys -> the `kind` label of agent_sessions_tokens_total.
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_write",
}
# A model call takes seconds to minutes; an action milliseconds to seconds; a commit
# of the event log a fraction of a millisecond to tens of milliseconds.
MODEL_CALL_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
ACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
# A delivery attempt (app/webhooks/delivery.py): answered 2xx; failed, and another
# attempt follows; failed, and given up.
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed")


class Metrics:
    """Every series of the service, registered in `self.registry`."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "agent_sessions_runs",
            "Runs that ended, by provider and terminal status.",
            ["provider", "status"],
            registry=registry,
        )
        self.runs_active = Gauge(
            "agent_sessions_runs_active",
            "Runs this replica executes now.",
            registry=registry,
        )
        self.model_call_seconds = Histogram(
            "agent_sessions_model_call_seconds",
            "Duration of each provider request (each attempt of a retried one).",
            ["provider", "model"],
            buckets=MODEL_CALL_BUCKETS,
            registry=registry,
        )
        self.action_seconds = Histogram(
            "agent_sessions_action_seconds",
            "Duration of each computer action, by computer kind and action type.",
            ["computer", "action"],
            buckets=ACTION_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "agent_sessions_tokens",
            "Tokens reported by the providers, by kind (input, output, cache_read, "
            "cache_write; OpenAI's input includes its cache reads).",
            ["provider", "model", "kind"],
            registry=registry,
        )
        self.cost_usd = Counter(
            "agent_sessions_cost_usd",
            "Estimated cost in USD from the price table (list prices; models the table "
            "does not know add nothing).",
            ["provider", "model"],
            registry=registry,
        )
        self.provider_retries = Counter(
            "agent_sessions_provider_retries",
            "Retried provider requests, by HTTP status (none: a timeout, a connection "
            "error or a malformed reply).",
            ["provider", "status"],
            registry=registry,
        )
        self.sse_subscribers = Gauge(
            "agent_sessions_sse_subscribers",
            "Open event streams on this replica.",
            registry=registry,
        )
        self.event_commit_seconds = Histogram(
            "agent_sessions_event_commit_seconds",
            "Duration of each transaction of the event log's writer (one batch of writes).",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "agent_sessions_webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered; retrying: failed, another "
            "attempt follows; failed: failed and given up).",
            ["outcome"],
            registry=registry,
        )
        for outcome in WEBHOOK_OUTCOMES:  # at 0 from the start, so rates can be taken
            self.webhook_deliveries.labels(outcome)
        self.leases_held = Gauge(
            "agent_sessions_leases_held",
            "Run leases this replica holds now.",
            registry=registry,
        )

    def watch(
        self,
        *,
        runs_active: Callable[[], float],
        leases_held: Callable[[], float],
        sse_subscribers: Callable[[], float],
    ) -> None:
        """Read the gauges from the service's parts when scraped."""
        self.runs_active.set_function(runs_active)
        self.leases_held.set_function(leases_held)
        self.sse_subscribers.set_function(sse_subscribers)

    def count_tokens(
        self, provider: str, model: str, usage: Mapping[str, int], cost: float | None
    ) -> None:
        """One model call's usage; `model` is already a bounded label."""
        for key, kind in TOKEN_KINDS.items():
            amount = int(usage.get(key, 0) or 0)
            if amount > 0:
                self.tokens.labels(provider, model, kind).inc(amount)
        if cost is not None:
            self.cost_usd.labels(provider, model).inc(cost)

    def render(self) -> bytes:
        """The registry in Prometheus's text format."""
        return generate_latest(self.registry)
