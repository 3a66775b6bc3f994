"""The backtest's JSON document and series, checked against the Status API models, against the
core driven directly, and against the SPEC's formulas folded by hand over the trades."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libs.config import BotConfig
from libs.core.market import MarketUpdate
from libs.core.sim_exchange import Fill
from libs.exchange.market_files import read_market_file
from libs.trading import new_symbol_strategy
from libs.wire.convert import trade_wire
from libs.wire.status import SYMBOL_SCALAR_FIELDS, StatusOut, SymbolOut, TradeOut
from tools.backtest.engine import (
    BacktestResult,
    SymbolRun,
    backtest_document,
    backtest_stats,
    equity_curve,
    fill_written_as_zero,
    run_backtest,
)

DATA = Path(__file__).parents[1] / "data"
KLINES = DATA / "klines-1m-3000.csv"
TRADES = DATA / "trades-2000.csv"

BOT = BotConfig.model_validate(
    {
        "id": "doc",
        "exchange": "binance",
        "start_capital": 1.0,
        "strategy": {"order_type": "taker", "buy_pct": 50},
        "symbols": [
            # high leverage on isolated margin: the klines liquidate a few positions
            {"product_id": "ALT-BTC", "min_size": "0.01", "price_decimals": 8, "leverage": 20},
            {
                "product_id": "XRP-ETH",
                "min_size": "0.1",
                "price_decimals": 8,
                "leverage": 2,
                "isolated": False,
                "weight": 3,
            },
            {"product_id": "IDLE-BTC", "min_size": "1", "price_decimals": 8},  # no data at all
        ],
    }
)


def updates_of(path: Path) -> list[MarketUpdate]:
    return [update for _, update in read_market_file(path, BOT.period_ms)]


@pytest.fixture(scope="module")
def updates() -> dict[str, list[MarketUpdate]]:
    return {"ALT-BTC": updates_of(KLINES), "XRP-ETH": updates_of(TRADES)}


@pytest.fixture(scope="module")
def document(updates: dict[str, list[MarketUpdate]]) -> dict[str, Any]:
    return backtest_document(run_backtest(BOT, updates, time_zone_offset_min=-480))


def core_trades(index: int, updates: list[MarketUpdate]) -> list[dict[str, Any]]:
    """The core driven directly, as the e2e tests do: the reference for the document's trades."""
    strategy = new_symbol_strategy(BOT, index)
    decimals = BOT.symbols[index].terms.price_decimals
    return [
        trade_wire(fill, decimals)
        for update in updates
        for fill in strategy.on_update(update).fills
    ]


def test_every_field_has_the_status_api_type(document: dict[str, Any]) -> None:
    assert list(document) == ["trades", "status", "symbols", "notes"]
    assert document["notes"] == []  # every term given: nothing assumed
    for trade in document["trades"]:
        TradeOut.model_validate(trade)
    StatusOut.model_validate(document["status"])
    for symbol in document["symbols"]:
        assert "klines" not in symbol
        assert [name for name in symbol if name != "trades"] == list(SYMBOL_SCALAR_FIELDS)
        SymbolOut.model_validate({**symbol, "klines": []})


def test_trades_are_the_cores_fills_of_all_symbols_by_time_then_order_id(
    document: dict[str, Any], updates: dict[str, list[MarketUpdate]]
) -> None:
    alt, xrp = core_trades(0, updates["ALT-BTC"]), core_trades(1, updates["XRP-ETH"])
    assert alt and xrp
    assert any(
        trade["action"] == "liquidation_long" or trade["action"] == "liquidation_short"
        for trade in alt
    )
    by_symbol = {s["product_id"]: s["trades"] for s in document["symbols"]}
    assert by_symbol == {"ALT-BTC": alt, "XRP-ETH": xrp, "IDLE-BTC": []}
    expected = sorted(alt + xrp, key=lambda trade: (trade["time"], trade["order_id"]))
    assert document["trades"] == expected
    # SPEC 3.1 rule 13: fill n of symbol i of 3 gets n * 3 + i + 1
    assert [t["order_id"] for t in alt] == [n * 3 + 1 for n in range(len(alt))]
    assert [t["order_id"] for t in xrp] == [n * 3 + 2 for n in range(len(xrp))]


def test_symbols_are_the_fold_of_their_trades(
    document: dict[str, Any], updates: dict[str, list[MarketUpdate]]
) -> None:
    allocations = {"ALT-BTC": 1.0 * 1 / 5, "XRP-ETH": 1.0 * 3 / 5, "IDLE-BTC": 1.0 * 1 / 5}
    symbols = {symbol["product_id"]: symbol for symbol in document["symbols"]}
    for product_id in ("ALT-BTC", "XRP-ETH"):
        symbol, trades = symbols[product_id], symbols[product_id]["trades"]
        realized = 0.0
        for trade in trades:  # in order_id order (SPEC 3.1 rule 16)
            realized += trade["usdtProfit"]
        closing = [t for t in trades if (t["type"] == "sell") == (t["position_side"] == "long")]
        assert symbol["usdtProfit"] == realized
        assert symbol["profit"] == realized / allocations[product_id]
        assert symbol["win"] + symbol["lost"] == len(closing)
        assert symbol["winLostRate"] == symbol["win"] / len(closing)
        assert symbol["lastTradeTime"] == trades[-1]["time"]
        assert symbol["price"] == updates[product_id][-1].price
        assert symbol["normalized"] == f"binance.{product_id}"
        open_position = len(trades) - 2 * len(closing)  # 1 when the last position is still open
        assert open_position in (0, 1)
        if open_position:
            last = trades[-1]
            size, entry, price = float(last["size"]), float(last["price"]), symbol["price"]
            gross = (
                (price - entry) * size
                if last["position_side"] == "long"
                else (entry - price) * size
            )
            # the TRADE price string is rounded to 8 decimals: at most half a step per unit off
            assert symbol["dynamicUsdtProfit"] == pytest.approx(gross, abs=size * 0.5e-8 * 1.01)
            assert symbol["signal"] in ("bought", "sold", "buying", "selling")
        else:
            assert symbol["dynamicUsdtProfit"] == 0 and symbol["assetCaptial"] == 0
    idle = symbols["IDLE-BTC"]
    assert (idle["price"], idle["usdtProfit"], idle["signal"], idle["lastTradeTime"]) == (
        0,
        0,
        None,
        0,
    )


def test_status_is_the_fold_of_the_symbols(
    document: dict[str, Any], updates: dict[str, list[MarketUpdate]]
) -> None:
    status, symbols = document["status"], document["symbols"]
    realized = unrealized = locked = 0.0
    for symbol in symbols:  # config order (SPEC 3.1 rule 16)
        realized += symbol["usdtProfit"]
        unrealized += symbol["dynamicUsdtProfit"]
        locked += symbol["assetCaptial"] - symbol["dynamicUsdtProfit"]
    assert status["tradeListLen"] == 3 and status["startCapital"] == 1.0
    assert status["usdtProfit"] == realized and status["profit"] == realized / 1.0
    assert status["dynamicUsdtProfit"] == unrealized
    assert status["totalCapital"] == 1.0 + status["usdtProfit"] + status["dynamicUsdtProfit"]
    assert status["currentCapital"] == pytest.approx(1.0 + realized - locked, rel=1e-9)
    assert status["tradeNum"] == len(document["trades"])
    assert status["win"] == sum(s["win"] for s in symbols)
    assert status["lost"] == sum(s["lost"] for s in symbols)
    assert status["winLostRate"] == status["win"] / (status["win"] + status["lost"])
    # SPEC 2.1 rule 14 and 3.1 rule 15
    first_times = [updates["ALT-BTC"][0].time_ms, updates["XRP-ETH"][0].time_ms]
    assert status["startTime"] == min(first_times)
    assert status["timeZoneOffset"] == -480
    assert status["status"] == "work" and status["exchange"] == "binance"


def test_statistics_agree_with_the_document(
    updates: dict[str, list[MarketUpdate]], document: dict[str, Any]
) -> None:
    result = run_backtest(BOT, updates, time_zone_offset_min=0)
    stats = backtest_stats(result)
    status = document["status"]
    fees = 0.0
    for trade in document["trades"]:
        fees += trade["fee"]
    assert stats.fill_count == status["tradeNum"]
    assert stats.round_trip_count == status["win"] + status["lost"]
    assert stats.win_lost_rate == status["winLostRate"]
    assert stats.final_capital == status["totalCapital"]
    assert stats.fees_paid == pytest.approx(fees, rel=1e-9)
    assert stats.liquidation_count == sum(
        t["action"].startswith("liquidation_") for t in document["trades"]
    )
    _, equity = equity_curve(result)
    assert equity[-1] == status["totalCapital"]
    assert stats.max_drawdown.absolute >= 0 and 0 <= stats.max_drawdown.pct <= 100
    alt = stats.symbols[0]
    first, last = updates["ALT-BTC"][0], updates["ALT-BTC"][-1]
    assert alt.buy_and_hold_pct == (last.price - first.price) / first.price * 100
    assert alt.update_count == 3000 and alt.kline_count == 3000
    assert 0 < alt.exposure_pct <= 100


def test_the_series_has_one_row_per_kline_with_the_bands_of_its_last_update(
    updates: dict[str, list[MarketUpdate]],
) -> None:
    result = run_backtest(BOT, {"XRP-ETH": updates["XRP-ETH"]}, time_zone_offset_min=0)
    series = result.symbols[1].series
    strategy = new_symbol_strategy(BOT, 1)
    last_of_kline: dict[int, Any] = {}
    for update in updates["XRP-ETH"]:  # trades: many updates per kline, the last one counts
        last_of_kline[update.kline.time_ms] = strategy.on_update(update).kline
    assert series.time_ms == list(last_of_kline)
    assert series.close == [annotated.kline.close for annotated in last_of_kline.values()]
    values = [annotated.annotation.values for annotated in last_of_kline.values()]
    assert list(series.indicators) == ["middle", "upper", "lower", "pb", "pw"]
    for position, name in enumerate(series.indicators):
        assert series.indicators[name] == [row[position] for row in values]
    middle = series.indicators["middle"]
    assert middle[0] is None and middle[-1] is not None
    assert result.symbols[0].series.time_ms == []  # no data, no rows


def test_progress_counts_every_update(updates: dict[str, list[MarketUpdate]]) -> None:
    counts: list[int] = []
    run_backtest(BOT, updates, time_zone_offset_min=0, progress=counts.append)
    assert sum(counts) == 3000 + 2000


def test_updates_for_a_symbol_the_bot_does_not_trade_are_refused() -> None:
    with pytest.raises(ValueError, match="DOGE-USDT"):
        run_backtest(BOT, {"DOGE-USDT": []}, time_zone_offset_min=0)


def test_the_notes_go_into_the_document_as_given(updates: dict[str, list[MarketUpdate]]) -> None:
    result = run_backtest(BOT, updates, time_zone_offset_min=0)
    notes = ["ALT-BTC: price_decimals 8, read off the file"]
    assert backtest_document(result, notes=notes)["notes"] == notes


def a_fill_at(price: float, order_id: int) -> Fill:
    return Fill(
        order_id=order_id,
        time_ms=60_000,
        execution_time_ms=0,
        slippage_pct=0.0,
        side="buy",
        size="1",
        fee=0.0,
        price=price,
        order_type="maker",
        action="BollingerBands_buy_long",
        profit=0.0,
        usdt_profit=0.0,
        position_side="long",
        round_trip=None,
    )


@pytest.mark.parametrize(
    ("decimals", "prices", "found"),
    [
        (2, [0.0016], (1, "0.00")),  # 0.0016 is below half a cent
        (2, [0.5, 0.004], (4, "0.00")),  # the first fill shows, the second (order_id 4) not
        (2, [0.005], None),  # the double 0.005 is a hair above 0.005: "0.01"
        (3, [0.0016], None),  # "0.002": coarse, but not 0
        (8, [0.00158364], None),
        (1, [0.04], (1, "0.0")),
    ],
)
def test_a_fill_whose_price_its_decimals_write_as_zero_is_found(
    decimals: int, prices: list[float], found: tuple[int, str] | None
) -> None:
    """`found`: the order_id and the text of the first fill written as 0 (order_ids 1, 4...)."""
    run = SymbolRun("ALT-BTC", decimals, new_symbol_strategy(BOT, 0))
    run.fills.extend(a_fill_at(price, n * 3 + 1) for n, price in enumerate(prices))
    result = BacktestResult(BOT, (run,), time_zone_offset_min=0)
    answer = fill_written_as_zero(result)
    if found is None:
        assert answer is None
    else:
        assert answer is not None
        assert (answer[1].order_id, answer[2]) == found
