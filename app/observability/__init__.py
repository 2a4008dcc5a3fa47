"""Metrics, logs and traces (SPEC v2.4).

- metrics.py: the Prometheus series of one app (its own CollectorRegistry), served at
  /metrics by app/api/metrics.py;
- prices.py: the per-model price table (USD per million tokens) behind the cost series
  (and, later, budgets);
- logging.py: one JSON object a line, with the request, tenant, session and run ids
  of the code that logs (contextvars);
- tracing.py: OpenTelemetry spans, set up only when OTEL_EXPORTER_OTLP_ENDPOINT is set;
- observer.py: the one object the runner, the run contexts and the event log report
  to, which feeds the three.
"""
