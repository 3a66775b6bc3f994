"""The Status API's messages (SPEC section 2), field names and order exactly as the document spells
them, including `assetCaptial`.

These models are the contract at the boundary: tests and clients validate frames with them, and the
services build JSON in the same field order. `StrictInt` keeps `int` fields JSON integers
(SPEC 2.1 rule 13); `extra="forbid"` catches a field the contract does not have.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    model_validator,
)

# The `int` fields of 2.1 rule 13 travel as JSON integers; `number` fields as finite doubles.
Number = float


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


DISPLAY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,31}$")  # SPEC 3.2 rule 3
INDICATOR_NAME = re.compile(r"^[a-z][A-Za-z0-9]{0,31}$")
STRATEGY_COUNTS = ("buyCrossCount", "sellCrossCount")
STRATEGY_FLAGS = ("buy", "sell")


class KlineStrategyOut(RootModel[dict[str, int | float | bool | None]]):
    """KLINE `strategy` (SPEC 3.2 rule 4): `<display name>_buyCrossCount`, `_sellCrossCount`
    (ints), `_buy`, `_sell` (bools), then the strategy's indicators, numbers or null, in its
    order. Which names depends on the bot's strategy, so the shape is checked, not the names."""

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("strategy must be an object")
        names = list(data)
        if len(names) < 4 or not names[0].endswith("_buyCrossCount"):
            raise ValueError("strategy must start with <display name>_buyCrossCount")
        display = names[0].removesuffix("_buyCrossCount")
        if DISPLAY_NAME.fullmatch(display) is None:
            raise ValueError(f"display name {display!r} must match {DISPLAY_NAME.pattern}")
        expected = [f"{display}_{suffix}" for suffix in (*STRATEGY_COUNTS, *STRATEGY_FLAGS)]
        if names[:4] != expected:
            raise ValueError(f"strategy must start with {', '.join(expected)}")
        for name in names[:2]:
            if type(data[name]) is not int:
                raise ValueError(f"{name} must be an integer")
        for name in names[2:4]:
            if type(data[name]) is not bool:
                raise ValueError(f"{name} must be a boolean")
        for name in names[4:]:
            value = data[name]
            if INDICATOR_NAME.fullmatch(name) is None:
                raise ValueError(f"indicator name {name!r} must match {INDICATOR_NAME.pattern}")
            if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
                raise ValueError(f"indicator {name} must be a finite number or null")
        return data


class KlineOut(_Wire):
    period_id: str
    time: StrictInt
    size: str
    close_time: StrictInt
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
    strategy: KlineStrategyOut


class TradeOut(_Wire):
    order_id: StrictInt
    time: StrictInt
    execution_time: StrictInt
    slippage: Number
    type: Literal["buy", "sell"]
    size: str
    fee: Number
    price: str
    order_type: Literal["maker", "taker"]
    action: str
    profit: Number
    usdtProfit: Number
    position_side: Literal["long", "short"]


class SymbolOut(_Wire):
    product_id: str
    price: Number
    normalized: str
    min_size: str
    asset: str
    currency: str
    assetCaptial: Number
    leverage: Number
    isolated: StrictBool
    usdtProfit: Number
    profit: Number
    dynamicUsdtProfit: Number
    dynamicProfit: Number
    signal: Literal["buying", "selling", "bought", "sold"] | None
    win: StrictInt
    lost: StrictInt
    winLostRate: Number
    trades: list[TradeOut]
    lastTradeTime: StrictInt
    klines: list[KlineOut]


SYMBOL_SCALAR_FIELDS: tuple[str, ...] = tuple(
    name for name in SymbolOut.model_fields if name not in ("trades", "klines")
)


class StatusOut(_Wire):
    tradeListLen: StrictInt
    startCapital: Number
    currentCapital: Number
    tradeNum: StrictInt
    usdtProfit: Number
    profit: Number
    dynamicUsdtProfit: Number
    dynamicProfit: Number
    totalCapital: Number
    win: StrictInt
    lost: StrictInt
    winLostRate: Number
    exchange: str
    startTime: StrictInt
    timeZoneOffset: StrictInt
    status: Literal["work", "stop"]


STATUS_FIELDS: tuple[str, ...] = tuple(StatusOut.model_fields)


class InitStatusOut(StatusOut):
    hasConfig: StrictBool
    hasStrategy: StrictBool
    hasMarket: StrictBool
    hasBacktest: StrictBool


class ExchangeOut(_Wire):
    name: Literal["sim"]
    makerFee: Number
    takerFee: Number


class InitMessage(_Wire):
    action: Literal["init"]
    seq: StrictInt = Field(ge=1)
    epoch: str = Field(pattern=r"^[0-9a-f]{16}$")
    exchange: ExchangeOut
    symbols: list[SymbolOut]
    status: InitStatusOut


class RefreshData(_Wire):
    symbols: list[SymbolOut]
    status: StatusOut


class RefreshMessage(_Wire):
    action: Literal["refresh"]
    seq: StrictInt = Field(ge=1)
    epoch: str = Field(pattern=r"^[0-9a-f]{16}$")
    data: RefreshData


class ResumeMessage(_Wire):
    action: Literal["resume"]
    seq: StrictInt = Field(ge=0)
    epoch: str


ErrorCode = Literal[
    "bad_json", "unknown_action", "bad_request", "unauthorized", "rate_limited", "unavailable"
]


class ErrorMessage(_Wire):
    action: Literal["error"]
    code: ErrorCode
    message: str = Field(max_length=200)
