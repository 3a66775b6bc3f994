"""Exchanges through CCXT: building a client, naming symbols, and what a market says about a symbol.

The pure part (symbol names, metadata, close matches, checks) takes plain values and is what the
tests pin down; `exchange_ids`, `new_exchange` and `counts_decimals` are the only places that touch
CCXT's modules, imported when called, so nothing builds a client (or loads CCXT) at import time.
Checking a bots file against the markets is ingest's (`services/ingest/ccxt_markets.py`).

Bandwagon product ids look like `ETH-USDT`; CCXT's unified symbols like `ETH/USDT`.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from libs.config import MarketTerms
from libs.errors import ConfigError

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


def counts_decimals(exchange: Any) -> bool:
    """Whether the client's precision mode counts decimal places (`market_metadata`'s
    `counts_decimals`) rather than giving tick sizes."""
    from ccxt.base.decimal_to_precision import DECIMAL_PLACES

    return bool(exchange.precisionMode == DECIMAL_PLACES)
