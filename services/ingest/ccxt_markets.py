"""The bots file against an exchange's markets: every enabled symbol and kline size exists there,
and the terms the file leaves out come from the exchange (SPEC 4.1 rule 6).

Ingest's part of market checking; what a market says about a symbol, and the CCXT clients, are in
`libs/exchange/markets.py`, shared with `bandwagon download`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from libs.config import BotsFile, SymbolConfig
from libs.errors import ConfigError
from libs.exchange.markets import (
    SymbolMetadata,
    ccxt_symbol,
    check_symbol,
    check_timeframe,
    market_metadata,
)

log = logging.getLogger(__name__)


def compare_metadata(bot_id: str, configured: SymbolConfig, exchange: SymbolMetadata) -> list[str]:
    """The terms the bots file gives that differ from the exchange's. The configured values
    stay: the file overrides the exchange, and either is frozen with the bot's state (SPEC 4.1
    rule 6), so a difference is only a WARNING."""
    differences = []
    if configured.min_size is not None and Decimal(configured.min_size) != Decimal(
        exchange.min_size
    ):
        differences.append(f"min_size {configured.min_size} (exchange {exchange.min_size})")
    if (
        configured.price_decimals is not None
        and configured.price_decimals != exchange.price_decimals
    ):
        differences.append(
            f"price_decimals {configured.price_decimals} (exchange {exchange.price_decimals})"
        )
    for difference in differences:
        log.warning(
            "bot %s %s: configured %s; the configured value stays (SPEC 4.1 rule 6)",
            bot_id,
            configured.product_id,
            difference,
            extra={"bot": bot_id, "symbol": configured.product_id},
        )
    return differences


def bot_symbols(bots: BotsFile, exchange_id: str) -> list[tuple[str, str, SymbolConfig]]:
    """(path, bot id, symbol config) of each enabled symbol on one exchange."""
    found = []
    for index, bot in enumerate(bots.bots):
        if not bot.enabled or bot.exchange != exchange_id:
            continue
        for position, symbol in enumerate(bot.symbols):
            found.append((f"bots[{index}].symbols[{position}]", bot.id, symbol))
    return found


def check_markets(
    bots: BotsFile,
    exchange_id: str,
    markets: Mapping[str, Any],
    timeframes: Mapping[str, Any],
    counts_decimals: bool,
) -> dict[str, SymbolMetadata]:
    """Every enabled bot's symbols on `exchange_id` exist there (else exit 78 with close
    matches), kline sizes too; differences from the bots file are WARNINGs; a market that does
    not say a term the bots file leaves out is exit 78 too. Returns the exchange's metadata by
    product id."""
    metadata: dict[str, SymbolMetadata] = {}
    for index, bot in enumerate(bots.bots):
        if bot.enabled and bot.exchange == exchange_id:
            check_timeframe(exchange_id, bot.kline_size, f"bots[{index}].kline_size", timeframes)
    for path, bot_id, configured in bot_symbols(bots, exchange_id):
        product = configured.product_id
        market = check_symbol(exchange_id, product, f"{path}.product_id", markets)
        found = market_metadata(market, counts_decimals)
        if found is None:
            if not configured.has_market_terms:
                missing = "min_size" if configured.min_size is None else "price_decimals"
                raise ConfigError(
                    f"{path}.{missing}",
                    "(not set)",
                    f"{exchange_id} gives no amount step or price precision for "
                    f"{ccxt_symbol(product)}: set min_size and price_decimals in the bots file",
                )
            log.warning("%s %s: the market gives no precision or minimum", exchange_id, product)
            continue
        metadata[product] = found
        compare_metadata(bot_id, configured, found)
    for bot in bots.bots:  # a disabled bot still gets its state, with terms to freeze in it
        if bot.enabled or bot.exchange != exchange_id:
            continue
        for symbol in bot.symbols:
            if symbol.has_market_terms or symbol.product_id in metadata:
                continue
            listed = markets.get(ccxt_symbol(symbol.product_id))
            found = None if listed is None else market_metadata(listed, counts_decimals)
            if found is None:
                log.warning(
                    "disabled bot %s: %s gives no terms for %s; its state waits for them",
                    bot.id,
                    exchange_id,
                    symbol.product_id,
                    extra={"bot": bot.id},
                )
                continue
            metadata[symbol.product_id] = found
    return metadata
