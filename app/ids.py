"""Identifiers that sort by creation time: a prefix, 12 hex digits of milliseconds,
then 16 random hex digits (so cursor pagination can order by id)."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"
