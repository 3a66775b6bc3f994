"""Webhook bodies and signatures, byte for byte as SPEC 6.1 rules 2 and 3 write them."""

from __future__ import annotations

from typing import Any

import pytest

from libs.wire.notifications import (
    delivery_id,
    epoch_body,
    fill_body,
    fill_kinds,
    signature,
    signed_headers,
)

TRADE: dict[str, Any] = {
    "order_id": 7,
    "time": 1700000060000,
    "action": "stopLoss_sell_long",
    "price": "2001.50",
    "size": "0.10000",
}


@pytest.mark.parametrize(
    ("action", "kinds"),
    [
        ("BollingerBands_buy_long", ["fill"]),
        ("liquidation_long", ["fill", "liquidation"]),
        ("stopLoss_sell_long", ["fill", "riskExit"]),
        ("trailingStop_buy_short", ["fill", "riskExit"]),
        ("takeProfit_sell_long", ["fill", "riskExit"]),
        ("RSI_sell_short", ["fill"]),
    ],
)
def test_a_fill_is_one_delivery_per_kind_it_is(action: str, kinds: list[str]) -> None:
    assert fill_kinds({"action": action}) == kinds


def test_ids_name_the_epoch_the_order_and_the_kind() -> None:
    assert delivery_id("00ff00ff00ff00ff", 7, "riskExit") == "00ff00ff00ff00ff:7:riskExit"
    assert delivery_id("00ff00ff00ff00ff", 7, "epoch") == "00ff00ff00ff00ff:0:epoch"


def test_a_fill_body_is_the_exact_json_spec_writes() -> None:
    body = fill_body(
        bot="demo", epoch="00ff00ff00ff00ff", product_id="ETH-USDT", trade=TRADE, kind="riskExit"
    )
    assert body == (
        b'{"event":"riskExit","id":"00ff00ff00ff00ff:7:riskExit","bot":"demo",'
        b'"epoch":"00ff00ff00ff00ff","time":1700000060000,"product_id":"ETH-USDT",'
        b'"trade":{"order_id":7,"time":1700000060000,"action":"stopLoss_sell_long",'
        b'"price":"2001.50","size":"0.10000"}}'
    )


def test_an_epoch_body_has_no_fill_fields() -> None:
    assert epoch_body(bot="demo", epoch="00ff00ff00ff00ff", created_ms=1700000000000) == (
        b'{"event":"epoch","id":"00ff00ff00ff00ff:0:epoch","bot":"demo",'
        b'"epoch":"00ff00ff00ff00ff","time":1700000000000}'
    )


def test_the_signature_is_rfc_4231s_hmac_sha256() -> None:
    # RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?"
    assert signature("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_the_headers_sign_the_body_and_stamp_the_attempt() -> None:
    body = b'{"event":"epoch"}'
    headers = signed_headers(delivery="e:0:epoch", body=body, secret="Jefe", now_ms=42)
    assert headers == {
        "Content-Type": "application/json",
        "X-Bandwagon-Id": "e:0:epoch",
        "X-Bandwagon-Signature": signature("Jefe", body),
        "X-Bandwagon-Timestamp": "42",
    }
