"""The per-model price table: USD per million tokens, and a run's cost from its usage.

Nothing can be fetched at run time, so the table is built in: the providers' published
list prices for the models this service knows, as of `PRICES_AS_OF`. They change;
`MODEL_PRICES_FILE` (JSON) replaces entries and adds models:

    {"claude-sonnet-4-6": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3},
     "my-proxy-model": {"input": 1, "output": 4}}

(`cache_write` and `cache_read` default to `input`: no discount assumed.) A model the
table does not know has no cost and is labelled `other` in metrics, which keeps the
label values bounded.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# When the built-in prices were last checked against the providers' pricing pages.
PRICES_AS_OF = "2026-03"
OTHER = "other"
PER_TOKENS = 1_000_000
# Providers whose `input_tokens` already include the cache reads (OpenAI's usage counts
# cached tokens inside input_tokens; Anthropic's counts them apart).
INPUT_INCLUDES_CACHE_READ = frozenset({"openai"})


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens. `cache_write` is Anthropic's 5-minute cache write."""

    input: float
    output: float
    cache_write: float
    cache_read: float


def _p(input_: float, output: float, cache_write: float, cache_read: float) -> ModelPrice:
    return ModelPrice(input_, output, cache_write, cache_read)


# List prices (standard tier, no batch discount, prompts under any long-context surcharge).
BUILT_IN: dict[str, ModelPrice] = {
    # Anthropic: cache writes cost 1.25x input, cache reads 0.1x.
    "claude-3-5-sonnet": _p(3, 15, 3.75, 0.30),
    "claude-3-7-sonnet": _p(3, 15, 3.75, 0.30),
    "claude-3-5-haiku": _p(0.80, 4, 1.00, 0.08),
    "claude-sonnet-4": _p(3, 15, 3.75, 0.30),
    "claude-sonnet-4-5": _p(3, 15, 3.75, 0.30),
    "claude-sonnet-4-6": _p(3, 15, 3.75, 0.30),
    "claude-haiku-4-5": _p(1, 5, 1.25, 0.10),
    "claude-opus-4": _p(15, 75, 18.75, 1.50),
    "claude-opus-4-1": _p(15, 75, 18.75, 1.50),
    "claude-opus-4-5": _p(5, 25, 6.25, 0.50),
    "claude-opus-4-6": _p(5, 25, 6.25, 0.50),
    # OpenAI: prompt caching is automatic; writes are free, reads discounted.
    "computer-use-preview": _p(3, 12, 0, 3),
    "gpt-5": _p(1.25, 10, 0, 0.125),
    "gpt-5.1": _p(1.25, 10, 0, 0.125),
    "gpt-5.2": _p(1.75, 14, 0, 0.175),
    "gpt-5.4": _p(2.50, 15, 0, 0.25),
}
# Other spellings of the same models.
ALIASES = {"claude-sonnet-4-0": "claude-sonnet-4", "claude-opus-4-0": "claude-opus-4"}

# Snapshot dates and cloud suffixes: claude-sonnet-4-5-20250929, claude-opus-4-1@20250805,
# anthropic.claude-opus-4-1-20250805-v1:0, gpt-5.4-2026-03-05, claude-3-7-sonnet-latest.
_SUFFIX = re.compile(r"(-v\d+(:\d+)?|[-@]\d{8}|-\d{4}-\d{2}-\d{2}|-latest)$")


@functools.lru_cache(maxsize=1024)
def canonical(model: str) -> str:
    """The model's name without a proxy prefix, a snapshot date or a cloud suffix."""
    name = model.strip().lower().rpartition("/")[2]
    if "claude-" in name:
        name = name[name.index("claude-") :]  # us.anthropic.claude-... (Bedrock)
    while (stripped := _SUFFIX.sub("", name)) != name:
        name = stripped
    return ALIASES.get(name, name)


class _PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)

    def price(self) -> ModelPrice:
        return ModelPrice(
            self.input,
            self.output,
            self.input if self.cache_write is None else self.cache_write,
            self.input if self.cache_read is None else self.cache_read,
        )


class PriceFileError(ValueError):
    """MODEL_PRICES_FILE cannot be read, or is not a table of prices."""


def read_price_file(path: Path) -> dict[str, ModelPrice]:
    try:
        raw: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PriceFileError(f"MODEL_PRICES_FILE {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise PriceFileError(f"MODEL_PRICES_FILE {path}: expected an object of model prices")
    prices: dict[str, ModelPrice] = {}
    for name, entry in raw.items():
        try:
            prices[canonical(str(name))] = _PriceEntry.model_validate(entry).price()
        except ValidationError as exc:
            raise PriceFileError(f"MODEL_PRICES_FILE {path}: {name}: {exc}") from exc
    return prices


class PriceTable:
    """Model name -> price; the built-in table, with a file's entries over it."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = dict(BUILT_IN if prices is None else prices)

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The built-in table, with MODEL_PRICES_FILE's entries replacing or adding models."""
        prices = dict(BUILT_IN)
        if path is not None:
            prices.update(read_price_file(path))
        return cls(prices)

    def __contains__(self, model: str) -> bool:
        return canonical(model) in self._prices

    def price(self, model: str) -> ModelPrice | None:
        return self._prices.get(canonical(model))

    def label(self, model: str) -> str:
        """The model as a metric label: its name in the table, else `other`."""
        name = canonical(model)
        return name if name in self._prices else OTHER

    def cost(self, provider: str, model: str, usage: Mapping[str, int]) -> float | None:
        """USD for one call's `usage` (the service's four token counts); None when the
        model is not in the table."""
        price = self.price(model)
        if price is None:
            return None
        cache_read = int(usage.get("cache_read_input_tokens", 0))
        cache_write = int(usage.get("cache_creation_input_tokens", 0))
        fresh = int(usage.get("input_tokens", 0))
        if provider in INPUT_INCLUDES_CACHE_READ:
            fresh = max(0, fresh - cache_read)
        output = int(usage.get("output_tokens", 0))
        return (
            fresh * price.input
            + output * price.output
            + cache_write * price.cache_write
            + cache_read * price.cache_read
        ) / PER_TOKENS
