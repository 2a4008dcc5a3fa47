"""Who is calling: an API key's tenant, a session token, or nobody (no API_KEYS).

A session token is `<token id>.<secret>`: the id (`tok_...`) finds its row, and only
the SHA-256 of the whole token is stored, so a leaked database yields no usable
token. The secret has 256 bits from `secrets`, so a plain hash is enough (no salt,
no slow KDF: nothing to guess).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from app.ids import new_id

TokenScope = Literal["read", "control"]
# "key": an API key (or, with no API_KEYS, no credential at all: scope None).
PrincipalScope = Literal["key", "read", "control"] | None

# What new_id("tok") makes: anything else is not a token (and never reaches a query).
_TOKEN_ID = re.compile(r"tok_[0-9a-f]{28}")


@dataclass(frozen=True)
class Principal:
    """The caller of one request. `scope` is "key" for an API key, "read" or "control"
    for a session token (then `token_id` and `session_id` name it), and None when the
    service has no API_KEYS and the request carries no token."""

    tenant: str
    scope: PrincipalScope
    token_id: str | None = None
    session_id: str | None = None
    expires_at: datetime | None = None  # a token's expiry

    @property
    def is_token(self) -> bool:
        return self.token_id is not None

    @property
    def can_control(self) -> bool:
        """May cancel, decide safety checks and start follow-up runs."""
        return self.scope != "read"

    @property
    def decided_by(self) -> str:
        """How a safety-check decision records this caller."""
        return f"token:{self.token_id}" if self.token_id else self.tenant


def mint_token() -> tuple[str, str, str]:
    """A new token: (token id, the token to hand out once, its hash to store)."""
    token_id = new_id("tok")
    token = f"{token_id}.{secrets.token_urlsafe(32)}"
    return token_id, token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str | None:
    """The id a token names, or None when the string is not shaped like a token."""
    token_id, dot, secret = token.partition(".")
    if not dot or not secret or not _TOKEN_ID.fullmatch(token_id):
        return None
    return token_id


def hash_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)
