"""Market terms (`min_size`, `price_decimals`): left to the source, overridden by the bots file,
frozen with the bot's state (SPEC 4.1 rule 6; issue 8 point 2). The pure parts."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from libs.config import BotConfig, BotsFile, MarketTerms
from libs.errors import ConfigError
from libs.store.market_terms import changed_terms, frozen_terms, missing_terms
from libs.trading import symbol_terms
from services.ingest.ccxt_markets import check_markets
from services.ingest.main import default_market_terms


def bot(*symbols: dict[str, Any]) -> BotConfig:
    return BotConfig.model_validate({"id": "live", "exchange": "binance", "symbols": symbols})


EXCHANGE = {
    "ETH-USDT": MarketTerms(min_size="0.0001", price_decimals=2),
    "BTC-USDT": MarketTerms(min_size="0.00001", price_decimals=1),
}


def test_terms_left_out_come_from_the_source_and_given_ones_override_it() -> None:
    configured = bot(
        {"product_id": "ETH-USDT"},
        {"product_id": "BTC-USDT", "min_size": "0.001"},  # overrides the exchange's step
    )
    assert not configured.has_market_terms
    assert missing_terms(configured) == ["ETH-USDT", "BTC-USDT"]

    resolved = configured.with_market_terms(EXCHANGE)

    assert resolved.has_market_terms and missing_terms(resolved) == []
    assert resolved.symbols[0].terms == MarketTerms(min_size="0.0001", price_decimals=2)
    assert resolved.symbols[1].terms == MarketTerms(min_size="0.001", price_decimals=1)
    assert symbol_terms(resolved, 1).min_size == "0.001"
    assert resolved.symbols[1].leverage == configured.symbols[1].leverage


def test_a_symbol_the_source_says_nothing_of_stays_unresolved() -> None:
    configured = bot({"product_id": "SOL-USDT"})
    assert configured.with_market_terms(EXCHANGE) == configured
    with pytest.raises(ConfigError, match=r"symbols\[SOL-USDT\]\.min_size"):
        symbol_terms(configured, 0)  # a backtest cannot trade without them


def test_the_frozen_config_gives_back_the_terms_it_froze() -> None:
    resolved = bot({"product_id": "ETH-USDT"}, {"product_id": "BTC-USDT"}).with_market_terms(
        EXCHANGE
    )
    frozen_json = orjson.dumps(resolved.trading_config())

    assert frozen_terms(frozen_json) == EXCHANGE


def test_a_change_at_the_exchange_is_named_only_for_terms_left_to_it() -> None:
    configured = bot({"product_id": "ETH-USDT"}, {"product_id": "BTC-USDT", "price_decimals": 1})
    now = {
        "ETH-USDT": MarketTerms(min_size="0.001", price_decimals=2),
        "BTC-USDT": MarketTerms(min_size="0.00001", price_decimals=2),  # the file gives 1
    }

    assert changed_terms(configured, EXCHANGE, now) == ["ETH-USDT: min_size 0.0001 (now 0.001)"]
    assert changed_terms(configured, EXCHANGE, EXCHANGE) == []


def test_sources_other_than_ccxt_supply_spec_s_default_terms_where_the_bots_file_is_silent() -> (
    None
):
    """SPEC 4.1 rule 10: min_size "0.00001" and price_decimals 2 unless the file says; only the
    ccxt source has an exchange to ask instead (rule 6)."""
    bots = BotsFile.model_validate(
        {
            "bots": [
                {"id": "a", "symbols": [{"product_id": "ETH-USDT", "min_size": "0.1"}]},
                {
                    "id": "b",
                    "exchange": "binance",
                    "symbols": [
                        {"product_id": "BTC-USDT"},
                        {"product_id": "SOL-USDT", "min_size": "0.1", "price_decimals": 3},
                    ],
                },
            ]
        }
    )
    assert default_market_terms(bots, "ccxt") == {}
    spec_default = MarketTerms(min_size="0.00001", price_decimals=2)
    for source in ("synthetic", "replay"):
        assert default_market_terms(bots, source) == {
            "mexc": {"ETH-USDT": spec_default},
            "binance": {"BTC-USDT": spec_default},
        }
    # the file's own min_size stays: a supplied term fills only what the file leaves out
    resolved = bots.bots[0].with_market_terms(default_market_terms(bots, "replay")["mexc"])
    assert resolved.symbols[0].terms == MarketTerms(min_size="0.1", price_decimals=2)


def _binance_market(step: str | None, tick: str | None) -> dict[str, Any]:
    return {
        "symbol": "ETH/USDT",
        "base": "ETH",
        "quote": "USDT",
        "precision": {"amount": step and float(step), "price": tick and float(tick)},
        "limits": {"amount": {"min": None}},
    }


def test_a_market_without_precision_is_a_config_error_when_the_file_leaves_terms_to_it() -> None:
    bots = BotsFile(bots=[bot({"product_id": "ETH-USDT"})])
    markets = {"ETH/USDT": _binance_market(None, None)}
    with pytest.raises(ConfigError) as error:
        check_markets(bots, "binance", markets, {"1m": "1m"}, counts_decimals=False)
    assert "bots[0].symbols[0].min_size" in str(error.value)
    assert "set min_size and price_decimals in the bots file" in str(error.value)


def test_the_exchange_terms_are_returned_and_a_configured_difference_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bots = BotsFile(bots=[bot({"product_id": "ETH-USDT", "min_size": "0.01"})])
    markets = {"ETH/USDT": _binance_market("0.0001", "0.01")}
    with caplog.at_level(logging.WARNING):
        found = check_markets(bots, "binance", markets, {"1m": "1m"}, counts_decimals=False)
    assert found["ETH-USDT"].terms == MarketTerms(min_size="0.0001", price_decimals=2)
    assert "configured min_size 0.01 (exchange 0.0001)" in caplog.text
    assert "price_decimals" not in caplog.text  # left to the exchange: nothing to compare


def test_a_disabled_bot_gets_its_terms_too_and_an_unlisted_symbol_only_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its state is created like any bot's (SPEC 4.1 rule 11), so its terms must be stored;
    a parked bot whose market is gone must not stop the start."""
    parked = BotConfig.model_validate(
        {
            "id": "parked",
            "enabled": False,
            "exchange": "binance",
            "symbols": [{"product_id": "ETH-USDT"}, {"product_id": "GONE-USDT"}],
        }
    )
    markets = {"ETH/USDT": _binance_market("0.0001", "0.01")}
    with caplog.at_level(logging.WARNING):
        found = check_markets(
            BotsFile(bots=[parked]), "binance", markets, {"1m": "1m"}, counts_decimals=False
        )
    assert found["ETH-USDT"].terms == MarketTerms(min_size="0.0001", price_decimals=2)
    assert "GONE-USDT" not in found
    assert "disabled bot parked: binance gives no terms for GONE-USDT" in caplog.text


def test_other_sources_supply_a_disabled_bot_s_terms_too() -> None:
    """Its state is created like any bot's (SPEC 4.1 rule 11): without terms it would wait."""
    bots = BotsFile.model_validate(
        {"bots": [{"id": "b", "enabled": False, "symbols": [{"product_id": "BTC-USDT"}]}]}
    )
    assert default_market_terms(bots, "replay") == {
        "mexc": {"BTC-USDT": MarketTerms(min_size="0.00001", price_decimals=2)}
    }
