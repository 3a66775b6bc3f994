"""Exchanges through CCXT: building a client, naming symbols, and what a market says about a symbol.

The pure part (symbol names, metadata, close matches, checks) takes plain values and is what the
tests pin down; `new_exchange` and `load_checked_markets` are the only places that touch CCXT's
classes, so the rest of ingest and `bandwagon download` never build clients at import time.

Bandwagon product ids look like `ETH-USDT`; CCXT's unified symbols like `ETH/USDT`.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from libs.config import BotsFile, MarketTerms, SymbolConfig
from libs.errors import ConfigError

log = logging.getLogger(__name__)

URLS_VARIABLE = "BANDWAGON_CCXT_URLS"
"""JSON `{exchange id: {endpoint: url}}` merged into `exchange.urls['api']`: a proxy, a recording
stand-in, or the tests' local exchange. Empty means the exchange's own URLs."""

# Per-exchange CCXT options. Binance: spot markets only (one exchangeInfo request instead of four,
# and `ETH/USDT` is the spot market), and the websocket's `aggTrade` stream, whose ids are those
# of the REST `aggTrades` that backfill the forming kline, so a trade seen both ways is one trade.
# Binance US (a subclass of CCXT's `binance` with other URLs) already fetches spot markets only,
# but its websocket defaults to the `trade` stream, whose ids are not those of REST `aggTrades`.
EXCHANGE_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {"fetchMarkets": {"types": ["spot"]}, "watchTrades": {"name": "aggTrade"}},
    "binanceus": {"watchTrades": {"name": "aggTrade"}},
}
CLOSE_MATCHES = 5


def ccxt_symbol(product_id: str) -> str:
    """`ETH-USDT` -> `ETH/USDT`."""
    return product_id.replace("-", "/", 1)


def product_id(symbol: str) -> str:
    """`ETH/USDT` -> `ETH-USDT` (a derivative's `:SETTLE` suffix is kept, so it matches nothing)."""
    return symbol.replace("/", "-", 1)


@dataclass(frozen=True, slots=True)
class SymbolMetadata:
    """What a market says about one symbol, in Bandwagon's terms (SPEC section 2 SYMBOL)."""

    asset: str
    currency: str
    min_size: str  # a plain decimal, as SPEC 2.1 rule 13 sends it
    price_decimals: int

    @property
    def terms(self) -> MarketTerms:
        return MarketTerms(min_size=self.min_size, price_decimals=self.price_decimals)


def plain_decimal(value: float) -> str:
    """`1e-05` -> `0.00001`: the shortest repr, never an exponent (SPEC 2.1 rule 13)."""
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def decimals_of(step: float) -> int:
    """Decimal places of a tick such as 0.01 (2) or 1 (0)."""
    text = plain_decimal(step)
    return len(text.partition(".")[2])


def market_metadata(market: Mapping[str, Any], counts_decimals: bool) -> SymbolMetadata | None:
    """From a CCXT market: min_size = the larger of the amount step and the minimum amount (a
    size Bandwagon sizes in multiples of min_size is then both valid and large enough), price
    decimals from the price precision. `counts_decimals`: the exchange's precision mode counts
    decimal places instead of giving a tick size. None when the market lacks either."""
    precision = market.get("precision") or {}
    limits = (market.get("limits") or {}).get("amount") or {}
    amount_precision, price_precision = precision.get("amount"), precision.get("price")
    if counts_decimals:
        step = None if amount_precision is None else 10.0 ** -int(amount_precision)
        price_decimals = None if price_precision is None else int(price_precision)
    else:
        step = None if amount_precision is None else float(amount_precision)
        price_decimals = None if price_precision is None else decimals_of(float(price_precision))
    minimum = limits.get("min")
    candidates = [v for v in (step, minimum) if isinstance(v, int | float) and math.isfinite(v)]
    candidates = [float(v) for v in candidates if v > 0]
    if not candidates or price_decimals is None or price_decimals < 0:
        return None
    return SymbolMetadata(
        asset=str(market.get("base", "")),
        currency=str(market.get("quote", "")),
        min_size=plain_decimal(max(candidates)),
        price_decimals=price_decimals,
    )


def close_matches(wanted: str, known: Iterable[str]) -> list[str]:
    """A few names like `wanted` (difflib), for a message that helps fix a typo."""
    return difflib.get_close_matches(wanted, list(known), n=CLOSE_MATCHES, cutoff=0.5)


def _hint(matches: list[str]) -> str:
    return f"; close matches: {', '.join(matches)}" if matches else "; no close match"


def check_exchange_id(exchange_id: str, path: str, known: Iterable[str]) -> None:
    """An exchange CCXT does not know stops the start (exit 78) with its close matches."""
    names = list(known)
    if exchange_id not in names:
        hint = _hint(close_matches(exchange_id, names))
        raise ConfigError(path, exchange_id, f"CCXT has no exchange of this id{hint}")


def check_symbol(
    exchange_id: str, product: str, path: str, markets: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The CCXT market of a product id; an unknown one stops the start with close matches."""
    market: Mapping[str, Any] | None = markets.get(ccxt_symbol(product))
    if market is None:
        spot = [product_id(symbol) for symbol in markets if ":" not in symbol]
        hint = _hint(close_matches(product, spot))
        raise ConfigError(
            path, product, f"{exchange_id} lists no market {ccxt_symbol(product)}{hint}"
        )
    return market


def check_timeframe(
    exchange_id: str, kline_size: str, path: str, timeframes: Mapping[str, Any]
) -> None:
    if timeframes and kline_size not in timeframes:
        hint = _hint(close_matches(kline_size, timeframes))
        raise ConfigError(path, kline_size, f"{exchange_id} has no klines of this size{hint}")


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


def parse_urls(text: str) -> dict[str, dict[str, Any]]:
    """`BANDWAGON_CCXT_URLS` as a mapping; a bad value is a config error (exit 78)."""
    if not text.strip():
        return {}
    try:
        urls = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(URLS_VARIABLE, text, f"not JSON: {error.msg}") from None
    if not isinstance(urls, dict) or not all(isinstance(v, dict) for v in urls.values()):
        raise ConfigError(URLS_VARIABLE, text, "must be {exchange id: {endpoint: url}}")
    return urls


# --- the shell: CCXT clients ----------------------------------------------------------------------


def exchange_ids() -> list[str]:
    import ccxt

    return list(ccxt.exchanges)


def new_exchange(exchange_id: str, urls: Mapping[str, Any] | None = None) -> Any:
    """An async CCXT client (the ccxt.pro class when CCXT has one, for `watch_*`), rate limited
    by CCXT itself (`enableRateLimit`: requests of all symbols of one exchange share its
    `rateLimit`). `urls` is merged into `exchange.urls['api']`."""
    import ccxt.async_support as ccxt_async
    import ccxt.pro as ccxt_pro

    module = ccxt_pro if hasattr(ccxt_pro, exchange_id) else ccxt_async
    options = {"defaultType": "spot", **EXCHANGE_OPTIONS.get(exchange_id, {})}
    exchange = getattr(module, exchange_id)({"enableRateLimit": True, "options": options})
    api = exchange.urls.get("api")
    for endpoint, url in (urls or {}).items():
        if isinstance(api, dict) and isinstance(url, dict) and isinstance(api.get(endpoint), dict):
            api[endpoint] = {**api[endpoint], **url}
        elif isinstance(api, dict):
            api[endpoint] = url
        else:
            exchange.urls["api"] = {endpoint: url}
            api = exchange.urls["api"]
    return exchange


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
