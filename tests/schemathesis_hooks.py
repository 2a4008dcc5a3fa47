"""Schemathesis hooks for tests/test_schemathesis.py (loaded by the `st` process through
SCHEMATHESIS_HOOKS): they keep generated requests inside this machine and bounded.

Every generated request still goes out; only values that would reach outside the
service or never end are replaced by values as valid:

- a session created with a `task` starts a run at once: it gets the `fake` computer
  (a generated `browser` would launch Chromium, a `cdp` one would dial a generated
  address); a session without a task keeps its generated computer (validated only);
- a generated webhook URL becomes a loopback one (nothing is ever sent elsewhere);
- the event stream is asked for with `follow=false`, so it replays and ends.
"""

from __future__ import annotations

from typing import Any

import schemathesis

FAKE_COMPUTER = {"type": "fake"}
# Nothing listens there: deliveries fail at once and are retried later, harmlessly.
LOOPBACK_WEBHOOK = "http://127.0.0.1:9/webhook"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # The case is serialized after this hook: editing it edits the request.
    path, method = case.operation.path, case.operation.method.upper()
    body = case.body
    if method == "POST" and path == "/v1/sessions" and isinstance(body, dict):
        if body.get("task"):
            body["computer"] = dict(FAKE_COMPUTER)
        if isinstance(body.get("webhook"), dict) and "url" in body["webhook"]:
            body["webhook"]["url"] = LOOPBACK_WEBHOOK
    if path == "/v1/sessions/{sid}/events":
        query = dict(case.query or {})
        query["follow"] = "false"
        case.query = query
