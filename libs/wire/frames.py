"""Every frame Bandwagon sends on the Status API (SPEC section 2: `init`, `refresh`, `error`,
`resume`), and the one look the gateway takes at a published refresh: its seq and epoch.

Builders and parser sit side by side because the parser's fast path rests on the builder: orjson
writes keys in insertion order, so every refresh `refresh_frame` builds begins
`{"action":"refresh","seq":N,"epoch":"E"`, and `refresh_head` reads that head with a regex instead
of parsing the body. A refresh is forwarded as the exact text that was published (SPEC 2.1 rule
11), so the gateway never needs more of it; a text with another layout falls back to a full parse.

orjson and re only: a gateway that imports this loads nothing of the trading core (no numpy, no
TA-Lib).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

JSONObject = dict[str, Any]
"""A Status API object (SYMBOL, STATUS, KLINE, TRADE) as orjson writes it, keys in SPEC order."""

CAPABILITIES: Mapping[str, bool] = {
    "hasConfig": True,
    "hasStrategy": True,
    "hasMarket": True,
    "hasBacktest": True,
}
"""The static flags an `init`'s status adds to STATUS (SPEC section 2)."""

MAX_ERROR_MESSAGE_CHARS = 200  # SPEC 2.1 rule 3


def with_lists(
    scalars: Mapping[str, Any], *, trades: Sequence[Any], klines: Sequence[Any]
) -> JSONObject:
    """A SYMBOL in wire order: scalars, with `trades` before `lastTradeTime` and `klines` last."""
    symbol: JSONObject = {}
    for name, value in scalars.items():
        if name == "lastTradeTime":
            symbol["trades"] = trades
        symbol[name] = value
    symbol["klines"] = klines
    return symbol


def refresh_frame(
    *, seq: int, epoch: str, symbols: Sequence[JSONObject], status: JSONObject
) -> bytes:
    """`{"action":"refresh","seq":N,"epoch":"E","data":{"symbols":[...],"status":{...}}}`, in
    that key order: `refresh_head` relies on the first three (SPEC 2.1 rules 5 and 11)."""
    return orjson.dumps(
        {
            "action": "refresh",
            "seq": seq,
            "epoch": epoch,
            "data": {"symbols": symbols, "status": status},
        }
    )


def init_frame(
    *,
    seq: int,
    epoch: str,
    maker_fee: float,
    taker_fee: float,
    symbols: Sequence[JSONObject],
    status: Mapping[str, Any],
) -> bytes:
    """The `init` frame (SPEC section 2, 2.1 rule 6): a snapshot at `seq`, its STATUS followed by
    the static capability flags."""
    return orjson.dumps(
        {
            "action": "init",
            "seq": seq,
            "epoch": epoch,
            "exchange": {"name": "sim", "makerFee": maker_fee, "takerFee": taker_fee},
            "symbols": symbols,
            "status": {**status, **CAPABILITIES},
        }
    )


def error_frame(code: str, message: str) -> str:
    """Exactly `{"action":"error","code":C,"message":M}`, M cut to 200 characters (SPEC 2.1
    rule 3)."""
    return orjson.dumps(
        {"action": "error", "code": code, "message": message[:MAX_ERROR_MESSAGE_CHARS]}
    ).decode()


def resume_frame(seq: int, epoch: str) -> str:
    """SPEC 2.1 rule 15: the reply that replaces `init` when the log still holds the gap."""
    return orjson.dumps({"action": "resume", "seq": seq, "epoch": epoch}).decode()


class RefreshHead(NamedTuple):
    seq: int
    epoch: str


# The head `refresh_frame` writes, for an epoch as accounting makes them (16 hex digits).
_REFRESH_HEAD = re.compile(r'\{"action":"refresh","seq":(\d{1,16}),"epoch":"([0-9a-f]{16})"')


def refresh_head(text: str) -> RefreshHead | None:
    """(seq, epoch) of a published refresh, or None when the text is not one. The regex reads
    the head `refresh_frame` writes; any other layout (keys reordered, spaces) is parsed whole."""
    match = _REFRESH_HEAD.match(text)
    if match is not None:
        return RefreshHead(int(match.group(1)), match.group(2))
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("action") != "refresh":
        return None
    seq, epoch = document.get("seq"), document.get("epoch")
    if isinstance(seq, int) and not isinstance(seq, bool) and isinstance(epoch, str):
        return RefreshHead(seq, epoch)
    return None
