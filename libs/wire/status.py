"""The Status API's messages (SPEC section 2), field names and order exactly as the document spells
them, including `assetCaptial`.

These models are the contract at the boundary: tests and clients validate frames with them, and the
services build JSON in the same field order. `StrictInt` keeps `int` fields JSON integers
(SPEC 2.1 rule 13); `extra="forbid"` catches a field the contract does not have.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

# The `int` fields of 2.1 rule 13 travel as JSON integers; `number` fields as finite doubles.
Number = float


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class KlineStrategyOut(_Wire):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    BollingerBands_buyCrossCount: StrictInt
    BollingerBands_sellCrossCount: StrictInt
    BollingerBands_buy: StrictBool
    BollingerBands_sell: StrictBool
    middle: Number | None
    upper: Number | None
    lower: Number | None
    pb: Number | None
    pw: Number | None


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
