"""The Status API frames Bandwagon builds (`libs.wire.frames`): the bytes they were before the
frames had one module, and the refresh head the gateway reads back (SPEC 2.1 rules 3, 11, 15)."""

from __future__ import annotations

import random

import orjson
import pytest

from libs.wire.frames import (
    CAPABILITIES,
    MAX_ERROR_MESSAGE_CHARS,
    error_frame,
    init_frame,
    refresh_frame,
    refresh_head,
    resume_frame,
    with_lists,
)
from libs.wire.status import InitMessage, RefreshMessage

EPOCH = "0123456789abcdef"
SCALARS = {
    "product_id": "ETH-USDT",
    "price": 3012.34,
    "signal": None,
    "win": 1,
    "winLostRate": 0.30000000000000004,
    "lastTradeTime": 1704067260000,
}
TRADE = {"order_id": 4, "type": "buy", "size": "0.06512", "price": "3012.34"}
KLINE = {
    "period_id": "m28401121",
    "time": 1704067260000,
    "close": 3012.34,
    "strategy": {"pb": None},
}
STATUS = {
    "tradeListLen": 1,
    "usdtProfit": -0.19612345678901233,
    "startTime": 1704067200000,
    "status": "work",
}
SYMBOL_BYTES = (
    b'{"product_id":"ETH-USDT","price":3012.34,"signal":null,"win":1,'
    b'"winLostRate":0.30000000000000004,'
    b'"trades":[{"order_id":4,"type":"buy","size":"0.06512","price":"3012.34"}],'
    b'"lastTradeTime":1704067260000,'
    b'"klines":[{"period_id":"m28401121","time":1704067260000,"close":3012.34,'
    b'"strategy":{"pb":null}}]}'
)
STATUS_BYTES = (
    b'{"tradeListLen":1,"usdtProfit":-0.19612345678901233,"startTime":1704067200000,"status":"work"'
)


def random_heads(count: int) -> list[tuple[int, str]]:
    """Seqs of every length the regex reads, epochs as accounting makes them (16 hex digits)."""
    chosen = random.Random(15)
    heads = [(1, EPOCH), (9, "ffffffffffffffff"), (10, "0000000000000000"), (2**53 - 1, EPOCH)]
    for _ in range(count):
        digits = chosen.randint(1, 16)
        seq = chosen.randint(10 ** (digits - 1), 10**digits - 1)
        heads.append((seq, f"{chosen.getrandbits(64):016x}"))
    return heads


# --- the bytes -----------------------------------------------------------------------------------


def test_a_symbol_lists_trades_before_last_trade_time_and_klines_last() -> None:
    symbol = with_lists(SCALARS, trades=[TRADE], klines=[KLINE])
    assert orjson.dumps(symbol) == SYMBOL_BYTES


def test_a_refresh_is_the_bytes_accounting_published_before_frames_had_one_module() -> None:
    symbols = [with_lists(SCALARS, trades=[TRADE], klines=[KLINE])]
    text = refresh_frame(seq=42, epoch=EPOCH, symbols=symbols, status=STATUS)
    assert text == (
        b'{"action":"refresh","seq":42,"epoch":"0123456789abcdef","data":{"symbols":['
        + SYMBOL_BYTES
        + b'],"status":'
        + STATUS_BYTES
        + b"}}}"
    )


def test_an_init_is_the_bytes_the_gateway_sent_before_frames_had_one_module() -> None:
    symbols = [with_lists(SCALARS, trades=[TRADE], klines=[KLINE])]
    text = init_frame(
        seq=42, epoch=EPOCH, maker_fee=0.02, taker_fee=0.05, symbols=symbols, status=STATUS
    )
    assert text == (
        b'{"action":"init","seq":42,"epoch":"0123456789abcdef",'
        b'"exchange":{"name":"sim","makerFee":0.02,"takerFee":0.05},"symbols":['
        + SYMBOL_BYTES
        + b'],"status":'
        + STATUS_BYTES
        + b',"hasConfig":true,"hasStrategy":true,"hasMarket":true,"hasBacktest":true}}'
    )
    assert dict(CAPABILITIES) == {
        "hasConfig": True,
        "hasStrategy": True,
        "hasMarket": True,
        "hasBacktest": True,
    }


def test_an_error_is_exactly_action_code_message_cut_to_200_characters() -> None:
    """SPEC 2.1 rule 3."""
    assert error_frame("bad_json", "the message is not valid JSON") == (
        '{"action":"error","code":"bad_json","message":"the message is not valid JSON"}'
    )
    long = error_frame("bad_request", "é" * 500)
    assert long == '{"action":"error","code":"bad_request","message":"' + "é" * 200 + '"}'
    assert MAX_ERROR_MESSAGE_CHARS == 200


def test_a_resume_is_action_seq_epoch() -> None:
    """SPEC 2.1 rule 15."""
    assert resume_frame(7, EPOCH) == '{"action":"resume","seq":7,"epoch":"0123456789abcdef"}'


def test_built_frames_match_the_wire_models() -> None:
    full_symbol = {
        "product_id": "ETH-USDT",
        "price": 0.0,
        "normalized": "binance.ETH-USDT",
        "min_size": "0.001",
        "asset": "ETH",
        "currency": "USDT",
        "assetCaptial": 0.0,
        "leverage": 2,
        "isolated": True,
        "usdtProfit": 0.0,
        "profit": 0.0,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "signal": None,
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "lastTradeTime": 0,
    }
    full_status = {
        "tradeListLen": 1,
        "startCapital": 1000.0,
        "currentCapital": 1000.0,
        "tradeNum": 0,
        "usdtProfit": 0.0,
        "profit": 0.0,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "totalCapital": 1000.0,
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "exchange": "binance",
        "startTime": 0,
        "timeZoneOffset": -480,
        "status": "work",
    }
    symbols = [with_lists(full_symbol, trades=[], klines=[])]
    refresh = refresh_frame(seq=3, epoch=EPOCH, symbols=symbols, status=full_status)
    assert RefreshMessage.model_validate_json(refresh).data.symbols[0].product_id == "ETH-USDT"
    init = init_frame(
        seq=3, epoch=EPOCH, maker_fee=0.02, taker_fee=0.05, symbols=symbols, status=full_status
    )
    assert InitMessage.model_validate_json(init).status.hasBacktest is True


# --- the head the gateway reads back -------------------------------------------------------------


@pytest.mark.parametrize(("seq", "epoch"), random_heads(200))
def test_a_built_refresh_is_read_back_from_its_fixed_head(seq: int, epoch: str) -> None:
    symbols = [with_lists(SCALARS, trades=[TRADE], klines=[KLINE])]
    text = refresh_frame(seq=seq, epoch=epoch, symbols=symbols, status=STATUS).decode()
    assert text.startswith(f'{{"action":"refresh","seq":{seq},"epoch":"{epoch}",')
    assert refresh_head(text) == (seq, epoch)
    head = refresh_head(text)
    assert head is not None and (head.seq, head.epoch) == (seq, epoch)


@pytest.mark.parametrize("seq", [10**16, 2**63 - 1])
def test_a_seq_longer_than_the_fast_head_reads_is_parsed_whole(seq: int) -> None:
    text = refresh_frame(seq=seq, epoch=EPOCH, symbols=[], status=STATUS).decode()
    assert refresh_head(text) == (seq, EPOCH)


def test_a_refresh_with_its_keys_in_another_order_is_parsed_whole() -> None:
    data = {"symbols": [with_lists(SCALARS, trades=[], klines=[])], "status": STATUS}
    reordered = orjson.dumps({"data": data, "epoch": EPOCH, "seq": 12, "action": "refresh"})
    assert refresh_head(reordered.decode()) == (12, EPOCH)
    spaced = '{ "epoch": "E", "seq": 3, "action": "refresh", "data": {} }'
    assert refresh_head(spaced) == (3, "E")  # an epoch of another shape, too


def test_anything_but_a_refresh_has_no_refresh_head() -> None:
    init = init_frame(seq=1, epoch=EPOCH, maker_fee=0.0, taker_fee=0.0, symbols=[], status={})
    assert refresh_head(init.decode()) is None
    assert refresh_head(resume_frame(4, EPOCH)) is None
    assert refresh_head(error_frame("bad_json", "no")) is None
    assert refresh_head("not json") is None
    assert refresh_head("[1, 2]") is None
    assert refresh_head('{"action":"refresh","seq":true,"epoch":"0123456789abcdef"}') is None
    assert refresh_head('{"action":"refresh","seq":"1","epoch":"0123456789abcdef"}') is None
    assert refresh_head('{"action":"refresh","seq":1,"epoch":7}') is None
