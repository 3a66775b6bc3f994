"""What a webhook receives (SPEC 6.1 rules 2 and 3), as pure functions: which kinds a fill is,
the delivery id, the exact body bytes and the signed headers. The notify worker (issue 18) only
sends what these build, so a receiver written from SPEC can check every byte of it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import orjson

from libs.core.risk_exits import ExitName
from libs.wire.notify_events import NotifyEvent as EventKind

EXIT_NAMES: tuple[str, ...] = get_args(ExitName)
TEST_EVENT = "test"
"""`bandwagon notify test`'s kind: no webhook listens to it, every receiver can be sent it."""


def fill_kinds(trade: Mapping[str, Any]) -> list[EventKind]:
    """The kinds a TRADE is, in SPEC's order: every fill is a `fill`; a liquidation's action
    starts with `liquidation_`, a risk exit's with the exit's name (`stopLoss_sell_long`, SPEC
    3.3 rule 3)."""
    action = str(trade["action"])
    kinds: list[EventKind] = ["fill"]
    if action.startswith("liquidation_"):
        kinds.append("liquidation")
    if action.split("_", 1)[0] in EXIT_NAMES:
        kinds.append("riskExit")
    return kinds


def delivery_id(epoch: str, order_id: int, kind: EventKind) -> str:
    """`<epoch>:<order_id>:<event>` for a fill's kind, `<epoch>:0:epoch` for a new epoch."""
    return f"{epoch}:{0 if kind == 'epoch' else order_id}:{kind}"


def fill_body(
    *, bot: str, epoch: str, product_id: str, trade: Mapping[str, Any], kind: EventKind
) -> bytes:
    """The body of one kind of one fill: `time` is the fill's event time, `trade` the TRADE as
    refreshes carry it (the same object, the same encoder)."""
    return orjson.dumps(
        {
            "event": kind,
            "id": delivery_id(epoch, int(trade["order_id"]), kind),
            "bot": bot,
            "epoch": epoch,
            "time": trade["time"],
            "product_id": product_id,
            "trade": trade,
        }
    )


def epoch_body(*, bot: str, epoch: str, created_ms: int) -> bytes:
    """The body announcing a new epoch; `time` is the state's creation, wall-clock ms."""
    return orjson.dumps(
        {
            "event": "epoch",
            "id": delivery_id(epoch, 0, "epoch"),
            "bot": bot,
            "epoch": epoch,
            "time": created_ms,
        }
    )


def signature(secret: str, body: bytes) -> str:
    """`sha256=<lowercase hex HMAC-SHA256 of the exact body bytes, keyed by the secret>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(*, delivery: str, body: bytes, secret: str, now_ms: int) -> dict[str, str]:
    """The headers of one attempt: the timestamp is this attempt's, the signature the body's."""
    return {
        "Content-Type": "application/json",
        "X-Bandwagon-Id": delivery,
        "X-Bandwagon-Signature": signature(secret, body),
        "X-Bandwagon-Timestamp": str(now_ms),
    }


def fill_deliveries(
    *,
    bot: str,
    epoch: str,
    product_id: str,
    trade: Mapping[str, Any],
    listens: Sequence[EventKind],
) -> list[tuple[str, EventKind, bytes]]:
    """(id, kind, body) of each delivery one fill makes for a webhook listening to `listens`:
    one per kind of the fill the webhook hears (SPEC 6.1 rule 2), in SPEC's order of kinds."""
    return [
        (
            delivery_id(epoch, int(trade["order_id"]), kind),
            kind,
            fill_body(bot=bot, epoch=epoch, product_id=product_id, trade=trade, kind=kind),
        )
        for kind in fill_kinds(trade)
        if kind in listens
    ]


def test_body(*, bot: str, epoch: str, now_ms: int) -> bytes:
    """`bandwagon notify test`'s delivery: an epoch-shaped body of kind `test`, id
    `<epoch>:0:test`, so a receiver's parser and signature check see a real shape."""
    return orjson.dumps(
        {
            "event": TEST_EVENT,
            "id": f"{epoch}:0:{TEST_EVENT}",
            "bot": bot,
            "epoch": epoch,
            "time": now_ms,
        }
    )


# --- Telegram: the same events as a short human message (issue 18) ---------------------------


def _opens(trade: Mapping[str, Any]) -> bool:
    """A buy opens a long and a sell opens a short; the other fills close one."""
    return bool((trade["type"] == "buy") == (trade["position_side"] == "long"))


def _signed(value: float, decimals: int) -> str:
    return f"{value:+,.{decimals}f}"


def _money(value: float) -> str:
    """Cents for a sum of a unit or more; three significant digits below (a BTC-quoted PnL of
    0.000123 is not `+0.00`)."""
    if value == 0 or abs(value) >= 1:
        return _signed(value, 2)
    return _signed(value, max(2, 2 - math.floor(math.log10(abs(value)))))


def telegram_text(body: Mapping[str, Any]) -> str:
    """The message a Telegram chat gets for a delivery body: bot, symbol, side, size, price, the
    PnL of a closing fill, the reason of an exit or a liquidation. Plain text (no parse mode), so
    nothing in it needs escaping."""
    event, bot = body["event"], body["bot"]
    if event == "epoch":
        return f"{bot}: new epoch {body['epoch']} (state created, reset or lost)"
    if event == TEST_EVENT:
        return f"{bot}: test message from bandwagon notify"
    trade, product_id = body["trade"], body["product_id"]
    action = str(trade["action"])
    side = trade["position_side"]
    headline = {
        "fill": "fill",
        "liquidation": "LIQUIDATION",
        "riskExit": f"risk exit ({action.split('_', 1)[0]})",
    }[event]
    lines = [
        f"{bot} {product_id}: {headline}",
        f"{trade['type']} {trade['size']} at {trade['price']} ({trade['order_type']}), "
        + (f"opens {side}" if _opens(trade) else f"closes {side}"),
    ]
    if not _opens(trade):
        currency = product_id.rsplit("-", 1)[-1]
        lines.append(
            f"PnL {_money(float(trade['usdtProfit']))} {currency} "
            f"({_signed(float(trade['profit']) * 100, 2)} %)"
        )
    if event == "fill" and action.startswith("liquidation_"):
        lines.append("reason: liquidation")
    elif event == "fill" and action.split("_", 1)[0] in EXIT_NAMES:
        lines.append(f"reason: {action.split('_', 1)[0]}")
    return "\n".join(lines)
