"""Every default of the bots file is SPEC 4.1 rule 10's: a file written from SPEC trades here as
anywhere else. The expected values are copied from SPEC's YAML by hand, never from the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from libs.config import BotConfig, load_bots
from libs.core.periods import kline_period_ms

MINIMAL = """\
bots:
  - id: demo
    symbols:
      - {product_id: ETH-USDT}
"""


def test_a_minimal_bots_file_gets_every_default_of_spec_4_1_rule_10(tmp_path: Path) -> None:
    path = tmp_path / "bots.yaml"
    path.write_text(MINIMAL)
    bots = load_bots(path)
    assert bots.market_stream_len == 1_000_000  # SPEC 4.1 rule 12
    bot = bots.bots[0]
    assert bot.id == "demo"
    assert bot.api_key_env == "BOT_API_KEY"
    assert bot.enabled is True
    assert bot.exchange == "mexc"
    assert bot.kline_size == "1m"
    assert bot.start_capital == 1000
    assert bot.maker_fee == 0.1
    assert bot.taker_fee == 0.1
    assert bot.refresh_interval_ms == 1000
    assert bot.kline_history == 300
    assert bot.trade_history == 500
    assert bot.refresh_log_len == 1000


def test_the_strategy_defaults_are_spec_4_1_rule_10s(tmp_path: Path) -> None:
    path = tmp_path / "bots.yaml"
    path.write_text(MINIMAL)
    strategy = load_bots(path).bots[0].strategy
    assert strategy.name == "BollingerBands"
    assert strategy.period == 20
    assert strategy.nbdev_up == 2
    assert strategy.nbdev_dn == 2
    assert strategy.mode == "both"
    assert strategy.order_type == "maker"
    assert strategy.buy_pct == 20
    assert strategy.order_timeout_ms == 60000
    assert strategy.slippage_pct == 0.05


def test_a_strategy_given_in_part_keeps_the_defaults_of_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bots.yaml"
    path.write_text(MINIMAL.replace("    symbols:", "    strategy: {period: 14}\n    symbols:"))
    strategy = load_bots(path).bots[0].strategy
    assert (strategy.period, strategy.nbdev_up, strategy.buy_pct) == (14, 2, 20)
    assert (strategy.order_type, strategy.slippage_pct) == ("maker", 0.05)


def test_the_symbol_defaults_are_spec_4_1_rule_10s(tmp_path: Path) -> None:
    path = tmp_path / "bots.yaml"
    path.write_text(MINIMAL)
    symbol = load_bots(path).bots[0].symbols[0]
    assert symbol.leverage == 10
    assert symbol.isolated is True
    assert symbol.weight == 1


def test_the_market_terms_left_out_are_left_to_the_source(tmp_path: Path) -> None:
    """The one deliberate difference from SPEC's YAML ("0.00001" and 2): a symbol that leaves
    its terms out takes them from its source (the exchange's markets with the ccxt source,
    docs/live-data.md), so a default here would silently override the exchange; every other
    source refuses to start without them (exit 78)."""
    path = tmp_path / "bots.yaml"
    path.write_text(MINIMAL)
    symbol = load_bots(path).bots[0].symbols[0]
    assert (symbol.min_size, symbol.price_decimals) == (None, None)
    assert symbol.has_market_terms is False


@pytest.mark.parametrize("size", ["1m", "5m", "15m", "1h", "4h", "1d", "9999m"])
def test_the_bots_file_reads_a_kline_size_as_the_core_does(size: str) -> None:
    """Config keeps its own copy of the size grammar (the gateway must not load the core)."""
    bot = BotConfig.model_validate(
        {"id": "a", "kline_size": size, "symbols": [{"product_id": "A-B"}]}
    )
    assert bot.period_ms == kline_period_ms(size)


@pytest.mark.parametrize("size", ["0m", "1w", "m", "1M", "10000m", " 1m"])
def test_a_kline_size_the_core_refuses_is_refused_by_the_bots_file(size: str) -> None:
    with pytest.raises(ValueError):
        kline_period_ms(size)
    with pytest.raises(ValidationError, match="must be <n>m, <n>h or <n>d"):
        BotConfig.model_validate(
            {"id": "a", "kline_size": size, "symbols": [{"product_id": "A-B"}]}
        )
