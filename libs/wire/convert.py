"""The one place core values become Status API JSON (SPEC section 2 field names and order)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from libs.core.decimals import format_decimal
from libs.core.periods import kline_close_time, period_id
from libs.core.portfolio import StatusFigures, SymbolFigures
from libs.core.sim_exchange import Fill, Signal

if TYPE_CHECKING:
    from libs.core.strategies.contract import Strategy
    from libs.core.strategy import AnnotatedKline


def json_number(value: float) -> float | int:
    """`leverage` is an int field when whole (SPEC 2.1 rule 13)."""
    return int(value) if float(value).is_integer() else value


def kline_wire(
    annotated: AnnotatedKline, size: str, period_ms: int, strategy: Strategy
) -> dict[str, Any]:
    """A KLINE; its `strategy` object is the cross counts and flags under the strategy's display
    name, then its indicator values in the order it declares them (SPEC 3.2 rule 4)."""
    kline, annotation = annotated.kline, annotated.annotation
    name = strategy.name
    values = annotation.values or (None,) * len(strategy.indicators)
    return {
        "period_id": period_id(kline.time_ms, size),
        "time": kline.time_ms,
        "size": size,
        "close_time": kline_close_time(kline.time_ms, period_ms),
        "open": kline.open,
        "high": kline.high,
        "low": kline.low,
        "close": kline.close,
        "volume": kline.volume,
        "strategy": {
            f"{name}_buyCrossCount": annotation.buy_cross_count,
            f"{name}_sellCrossCount": annotation.sell_cross_count,
            f"{name}_buy": annotation.buy_ordered,
            f"{name}_sell": annotation.sell_ordered,
            **dict(zip(strategy.indicators, values, strict=True)),
        },
    }


def trade_wire(fill: Fill, price_decimals: int) -> dict[str, Any]:
    return {
        "order_id": fill.order_id,
        "time": fill.time_ms,
        "execution_time": fill.execution_time_ms,
        "slippage": fill.slippage_pct,
        "type": fill.side,
        "size": fill.size,
        "fee": fill.fee,
        "price": format_decimal(fill.price, price_decimals),
        "order_type": fill.order_type,
        "action": fill.action,
        "profit": fill.profit,
        "usdtProfit": fill.usdt_profit,
        "position_side": fill.position_side,
    }


def symbol_scalars(
    *,
    product_id: str,
    exchange: str,
    min_size: str,
    leverage: float,
    isolated: bool,
    figures: SymbolFigures,
    signal: Signal | None,
) -> dict[str, Any]:
    """Every SYMBOL field but `trades` and `klines`, in `SYMBOL_SCALAR_FIELDS` order."""
    asset, currency = product_id.split("-", 1)
    return {
        "product_id": product_id,
        "price": figures.price,
        "normalized": f"{exchange}.{product_id}",
        "min_size": min_size,
        "asset": asset,
        "currency": currency,
        "assetCaptial": figures.asset_capital,
        "leverage": json_number(leverage),
        "isolated": isolated,
        "usdtProfit": figures.realized_pnl,
        "profit": figures.profit,
        "dynamicUsdtProfit": figures.unrealized_pnl,
        "dynamicProfit": figures.unrealized_profit,
        "signal": signal,
        "win": figures.win,
        "lost": figures.lost,
        "winLostRate": figures.win_lost_rate,
        "lastTradeTime": figures.last_trade_time_ms,
    }


def status_wire(
    figures: StatusFigures,
    *,
    exchange: str,
    start_time_ms: int,
    time_zone_offset_min: int,
    enabled: bool,
) -> dict[str, Any]:
    """Every STATUS field, in `STATUS_FIELDS` order."""
    return {
        "tradeListLen": figures.symbol_count,
        "startCapital": figures.start_capital,
        "currentCapital": figures.current_capital,
        "tradeNum": figures.fill_count,
        "usdtProfit": figures.realized_pnl,
        "profit": figures.profit,
        "dynamicUsdtProfit": figures.unrealized_pnl,
        "dynamicProfit": figures.unrealized_profit,
        "totalCapital": figures.total_capital,
        "win": figures.win,
        "lost": figures.lost,
        "winLostRate": figures.win_lost_rate,
        "exchange": exchange,
        "startTime": start_time_ms,
        "timeZoneOffset": time_zone_offset_min,
        "status": "work" if enabled else "stop",
    }
