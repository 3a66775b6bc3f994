"""What a webhook receives (SPEC 6.1 rules 2 and 3), as pure functions: which kinds a fill is,
the delivery id, the exact body bytes and the signed headers. The notify worker (issue 18) only
sends what these build, so a receiver written from SPEC can check every byte of it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Literal, get_args

import orjson

from libs.core.risk_exits import ExitName

EventKind = Literal["fill", "liquidation", "riskExit", "epoch"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
EXIT_NAMES: tuple[str, ...] = get_args(ExitName)


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
