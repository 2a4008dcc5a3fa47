"""The price table: model names in their usual spellings, each provider's usage
semantics, MODEL_PRICES_FILE over the built-in prices, and a bad file refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import prices_refusal
from app.observability.prices import (
    BUILT_IN,
    OTHER,
    ModelPrice,
    PriceFileError,
    PriceTable,
    canonical,
)
from app.settings import Settings


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("us.anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("openai/gpt-5.4", "gpt-5.4"),
        ("GPT-5.4-2026-03-05", "gpt-5.4"),
        ("computer-use-preview-2025-03-11", "computer-use-preview"),
    ],
)
def test_model_names_in_their_spellings(model: str, name: str) -> None:
    assert canonical(model) == name
    assert PriceTable().label(model) == name


def test_the_default_models_have_prices_and_others_are_labelled_other() -> None:
    defaults = Settings(database_url="sqlite+aiosqlite://")
    table = PriceTable()
    assert defaults.default_anthropic_model in table
    assert defaults.default_openai_model in table
    assert table.label("claude-mythos-preview") == OTHER
    assert table.cost("anthropic", "claude-mythos-preview", {"input_tokens": 10}) is None


def test_cost_follows_each_providers_usage() -> None:
    table = PriceTable({"m": ModelPrice(input=2, output=10, cache_write=2.5, cache_read=0.2)})
    usage = {
        "input_tokens": 1_000_000,
        "output_tokens": 100_000,
        "cache_creation_input_tokens": 400_000,
        "cache_read_input_tokens": 500_000,
    }
    # Anthropic counts cache reads and writes apart from input_tokens.
    assert table.cost("anthropic", "m", usage) == pytest.approx(2 + 1 + 1 + 0.1)
    # OpenAI's input_tokens include the cached ones: only the rest pays the input price.
    assert table.cost("openai", "m", usage) == pytest.approx(1 + 1 + 1 + 0.1)


def test_a_prices_file_replaces_and_adds_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "claude-sonnet-4-6-20260201": {"input": 1, "output": 2, "cache_read": 0.5},
                "acme-model": {"input": 4, "output": 8},
            }
        )
    )
    table = PriceTable.load(path)
    assert table.price("claude-sonnet-4-6") == ModelPrice(1, 2, 1, 0.5)
    assert table.price("acme-model") == ModelPrice(4, 8, 4, 4)  # no discount assumed
    assert table.price("gpt-5.4") == BUILT_IN["gpt-5.4"]
    assert table.label("acme-model") == "acme-model"


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", '{"m": {"input": -1, "output": 1}}', '{"m": {"input": 1}}'],
)
def test_a_bad_prices_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PriceFileError):
        PriceTable.load(path)
    settings = Settings(database_url="sqlite+aiosqlite://", model_prices_file=path)
    assert "MODEL_PRICES_FILE" in (prices_refusal(settings) or "")
