"""The strategy event (`libs.wire.events`) and the strategy checkpoint (`libs.wire.checkpoint`):
entries and checkpoints already in Redis decode and encode back to the very same bytes, and what
the strategy worker writes is what accounting folds."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from libs.config import BotConfig
from libs.core.pnl import Ledger, Position
from libs.core.sim_exchange import SymbolTerms
from libs.core.strategies import BollingerBands
from libs.core.strategy import StrategyParams
from libs.exchange.market_files import read_market_file
from libs.trading import new_symbol_strategy
from libs.wire.checkpoint import decode_strategy, encode_strategy, ledger_state, strategy_state
from libs.wire.events import StrategyEvent
from libs.wire.market import encode_update
from services.accounting.book import BotBook
from services.strategy.worker import (
    BatchOutput,
    Partition,
    apply_entries,
    decode_entries,
    strategy_event,
)

KLINES = Path(__file__).parents[1] / "data" / "klines-1m-3000.csv"

# Written by the strategy worker before the event had a type (one kline and one trade kept).
LEDGER = (
    b'{"allocation":500.0,"realized_pnl":-7.572661409958263,"fill_count":17,"win":1,"lost":7,'
    b'"last_trade_time_ms":1509839159999,"position":{"side":"short",'
    b'"entry_price":0.0015836177950000001,"size":"124430.12","margin":98.52487766846154,'
    b'"opening_fee":0.19704975226598542}}'
)
OLD_ENTRY = (
    b'{"symbol":"CAD-BTC","entry_id":"37-0","time":1509839879999,"first_time":1509836579999,'
    b'"price":0.00159242,"signal":"buying","ledger":'
    + LEDGER
    + b',"klines":[{"period_id":"m25163997","time":1509839820000,"size":"1m",'
    b'"close_time":1509839879999,"open":0.00159242,"high":0.00159242,"low":0.00159242,'
    b'"close":0.00159242,"volume":12.05153234,"strategy":{"BollingerBands_buyCrossCount":1,'
    b'"BollingerBands_sellCrossCount":0,"BollingerBands_buy":true,"BollingerBands_sell":false,'
    b'"middle":0.001598036,"upper":0.0015994556464348562,"lower":0.0015966163535651437,'
    b'"pb":-1.4779572794012241,"pw":0.17767389906814132}}],'
    b'"trades":[{"order_id":33,"time":1509839159999,"execution_time":120000,'
    b'"slippage":0.981185948940476,"type":"sell","size":"124430.12","fee":0.19704975226598542,'
    b'"price":"0.00158362","order_type":"taker","action":"BollingerBands_sell_short",'
    b'"profit":-0.001,"usdtProfit":-0.19704975226598542,"position_side":"short"}]}'
)
# Written by the strategy worker before the codec left the core, for the same symbol.
OLD_CHECKPOINT = (
    b'{"ledger":' + LEDGER + b',"closed_closes":[0.00159897,0.00159897,0.00159991,0.00159991],'
    b'"kline":{"kline":[1509839820000,0.00159242,0.00159242,0.00159242,0.00159242,12.05153234],'
    b'"counts":[1,0],"ordered":[true,false],'
    b'"bands":[0.001598036,0.0015994556464348562,0.0015966163535651437],'
    b'"percent_b":-1.4779572794012241,"width_pct":0.17767389906814132},'
    b'"price":0.00159242,"last_time_ms":1509839879999,"first_time_ms":1509836579999,'
    b'"signal":"buying","order":{"side":"buy","closes":true,"opens":true,"order_type":"taker",'
    b'"signal_time_ms":1509839879999,"signal_price":0.00159242,"previous_signal":"sold"},'
    b'"buy_condition":true,"sell_condition":false}'
)


def bot_config() -> BotConfig:
    return BotConfig.model_validate(
        {
            "id": "events",
            "exchange": "binance",
            "start_capital": 1000.0,
            "strategy": {"order_type": "taker", "period": 5, "nbdev_up": 0.5, "nbdev_dn": 0.5},
            "symbols": [
                {"product_id": "CAD-BTC", "min_size": "0.01", "price_decimals": 8, "leverage": 2}
            ],
        }
    )


# --- the event's bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("stored", [OLD_ENTRY, OLD_ENTRY.decode()])
def test_an_entry_already_in_the_stream_decodes_and_encodes_back_to_its_bytes(
    stored: bytes | str,
) -> None:
    event = StrategyEvent.from_fields({"data": stored})
    assert (event.product_id, event.entry_id, event.signal) == ("CAD-BTC", "37-0", "buying")
    assert (event.time_ms, event.first_time_ms, event.price) == (
        1509839879999,
        1509836579999,
        0.00159242,
    )
    assert event.ledger.fill_count == 17
    assert event.ledger.position is not None and event.ledger.position.size == "124430.12"
    assert [kline["time"] for kline in event.klines] == [1509839820000]
    assert [trade["order_id"] for trade in event.trades] == [33]
    assert event.to_fields() == {"data": OLD_ENTRY}


def test_an_entry_written_before_entry_id_existed_reads_an_empty_entry_id() -> None:
    value = orjson.loads(OLD_ENTRY)
    del value["entry_id"]
    assert StrategyEvent.from_fields({"data": orjson.dumps(value)}).entry_id == ""


@pytest.mark.parametrize(
    "ledger",
    [
        Ledger(allocation=1000.0),
        Ledger(500.0, -1.5, 3, 1, 1, 1_700_000_000_000, Position("long", 0.1, "3.5", 2.0, 0.01)),
    ],
)
def test_an_event_survives_its_stream_entry_unchanged(ledger: Ledger) -> None:
    event = StrategyEvent(
        product_id="ETH-USDT",
        entry_id="1704067200000-3",
        time_ms=1_704_067_200_000,
        first_time_ms=1_704_067_140_000,
        price=0.30000000000000004,
        signal=None,
        ledger=ledger,
        klines=({"time": 1_704_067_200_000, "close": 1.5},),
        trades=(),
    )
    fields = event.to_fields()
    assert StrategyEvent.from_fields(fields) == event
    assert StrategyEvent.from_fields({"data": fields["data"].decode()}) == event


def test_the_ledger_of_an_event_is_written_as_the_checkpoint_writes_it() -> None:
    event = StrategyEvent.from_fields({"data": OLD_ENTRY})
    assert orjson.dumps(ledger_state(event.ledger)) == LEDGER


def test_a_checkpoint_from_before_strategies_loads_and_trades_on_as_it_would_have() -> None:
    """A Bollinger checkpoint written before SPEC 3.2 (closes only, bands by name) loads: same
    window closes, same kline values, same order; saved again in today's format, it reloads to
    the same state, so a deploy never loses a symbol's place."""
    terms = SymbolTerms(0, 1, "0.01", 8, 2.0, True, 0.02, 0.05, 100.0, 0.05, 120_000, "x")
    params = StrategyParams(BollingerBands(5, 0.5, 0.5), mode="both", order_type="taker")
    strategy = decode_strategy(terms, params, OLD_CHECKPOINT)
    assert strategy.order is not None and strategy.order.previous_signal == "sold"
    assert strategy.order.exit is None
    assert strategy.kline is not None and strategy.kline.annotation.buy_ordered is True
    assert [kline.close for kline in strategy.closed_klines()] == [
        0.00159897,
        0.00159897,
        0.00159991,
        0.00159991,
    ]
    assert strategy.kline.annotation.values == (
        0.001598036,
        0.0015994556464348562,
        0.0015966163535651437,
        -1.4779572794012241,
        0.17767389906814132,
    )
    saved = encode_strategy(strategy)
    assert b'"closed_closes"' not in saved and b'"closed_klines"' in saved
    again = decode_strategy(terms, params, saved)
    assert encode_strategy(again) == saved
    assert strategy_state(again) == strategy_state(strategy)


# --- from the strategy worker to the book --------------------------------------------------------


def test_the_book_folds_an_event_and_the_json_object_accounting_reads_alike() -> None:
    """Accounting reads an entry as its JSON object (`orjson.loads` of `data`); the typed event
    and that object make the same refreshes, with the same bytes."""
    bot = bot_config()
    partition = Partition(bot, 0, "stream", new_symbol_strategy(bot, 0), "0-0")
    read = read_market_file(KLINES, 60_000)
    updates = [update for _, (_, update) in zip(range(120), read, strict=False)]
    typed = BotBook.fresh(bot, epoch="0123456789abcdef", seq=1)
    decoded = BotBook.fresh(bot, epoch="0123456789abcdef", seq=1)
    fills = 0
    for start in range(0, len(updates), 10):
        output = BatchOutput()
        entries = [
            (f"{start + n + 1}-0", encode_update(update, f"test:{start + n}"))
            for n, update in enumerate(updates[start : start + 10])
        ]
        apply_entries(partition, decode_entries(entries), output)
        event = strategy_event(partition, output)
        fields = event.to_fields()
        assert event.to_value() == orjson.loads(fields["data"])
        fills += len(event.trades)
        entry_id = output.last_entry_id
        typed.apply(entry_id, StrategyEvent.from_fields(fields))
        decoded.apply(entry_id, StrategyEvent.from_value(orjson.loads(fields["data"])))
        typed_refresh, decoded_refresh = typed.next_refresh(0), decoded.next_refresh(0)
        assert typed_refresh is not None and decoded_refresh is not None
        assert typed_refresh.text == decoded_refresh.text
        assert typed.accounting_fields() == decoded.accounting_fields()
        typed.published(typed_refresh)
        decoded.published(decoded_refresh)
    assert fills > 0
