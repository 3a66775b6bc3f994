"""A bot's state written the way accounting writes it (libs/store/published.py), for gateway tests.

Each refresh is one MULTI with `stage_refresh_commit`: hashes, seq, log entry `<seq>-0` and the
PUBLISH together. The seed remembers every published text and the state an `init` must show, so a
test compares frames byte for byte and field by field.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from libs.config import api_key_hash
from libs.store import keys
from libs.store.published import Display, SymbolCommit, stage_refresh_commit
from libs.wire.frames import with_lists
from libs.wire.status import STATUS_FIELDS, SYMBOL_SCALAR_FIELDS

KLINE_PERIOD_MS = 60_000
# SPEC 2.1 rule 11: static flags, all four true once the backtest module exists; `init` only.
CAPABILITIES = {"hasConfig": True, "hasStrategy": True, "hasMarket": True, "hasBacktest": True}
FIRST_KLINE_MS = 1_681_105_620_000


def new_epoch() -> str:
    return secrets.token_hex(8)


def api_key_for(bot: str) -> str:
    return f"key-{bot}-" + "k" * 20


def _status(seq: int, exchange: str, trades: int, symbols: int) -> dict[str, Any]:
    status = {
        "tradeListLen": symbols,
        "startCapital": 1000.0,
        "currentCapital": 1000.0 + seq / 8,
        "tradeNum": trades,
        "usdtProfit": seq / 8,
        "profit": seq / 8000,
        "dynamicUsdtProfit": 0.5,
        "dynamicProfit": 0.0005,
        "totalCapital": 1000.5 + seq / 8,
        "win": seq // 3,
        "lost": seq // 5,
        "winLostRate": 0.5,
        "exchange": exchange,
        "startTime": FIRST_KLINE_MS,
        "timeZoneOffset": -480,
        "status": "work",
    }
    assert tuple(status) == STATUS_FIELDS
    return status


def _scalars(product_id: str, seq: int, trades: list[dict[str, Any]]) -> dict[str, Any]:
    asset, currency = product_id.split("-")
    scalars = {
        "product_id": product_id,
        "price": 1800.0 + seq,
        "normalized": f"mexc.{product_id}",
        "min_size": "0.001",
        "asset": asset,
        "currency": currency,
        "assetCaptial": 0.0,
        "leverage": 10,
        "isolated": True,
        "usdtProfit": seq / 8,
        "profit": seq / 8000,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "signal": "bought" if trades else None,
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "lastTradeTime": trades[-1]["time"] if trades else 0,
    }
    assert tuple(scalars) == SYMBOL_SCALAR_FIELDS
    return scalars


def _kline(time_ms: int, close: float) -> dict[str, Any]:
    return {
        "period_id": f"m{time_ms // KLINE_PERIOD_MS}",
        "time": time_ms,
        "size": "1m",
        "close_time": time_ms + KLINE_PERIOD_MS - 1,
        "open": close - 1,
        "high": close + 2,
        "low": close - 2,
        "close": close,
        "volume": 3.5,
        "strategy": {
            "BollingerBands_buyCrossCount": 0,
            "BollingerBands_sellCrossCount": 0,
            "BollingerBands_buy": False,
            "BollingerBands_sell": False,
            "middle": None,
            "upper": None,
            "lower": None,
            "pb": None,
            "pw": None,
        },
    }


def _trade(order_id: int, time_ms: int, price: float) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "time": time_ms,
        "execution_time": 0,
        "slippage": 0.0,
        "type": "buy",
        "size": "0.100",
        "fee": 0.18,
        "price": f"{price:.2f}",
        "order_type": "taker",
        "action": "BollingerBands_buy_long",
        "profit": -0.001,
        "usdtProfit": -0.18,
        "position_side": "long",
    }


@dataclass
class SeededBot:
    """One bot's published history; `publish` adds refresh `seq + 1`."""

    bot: str
    epoch: str
    product_ids: tuple[str, ...] = ("ETH-USDT", "BTC-USDT")
    kline_history: int = 300
    trade_history: int = 500
    refresh_log_len: int = 1000
    seq: int = 0
    exchange: str = "mexc"
    published: dict[int, str] = field(default_factory=dict)
    klines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_order_id: int = 1

    @property
    def api_key(self) -> str:
        return api_key_for(self.bot)

    @property
    def display(self) -> Display:
        return Display(
            product_ids=self.product_ids,
            maker_fee=0.1,
            taker_fee=0.1,
            kline_history=self.kline_history,
            trade_history=self.trade_history,
        )

    async def publish(
        self, redis: Redis, *, trades: int = 0, pad_chars: int = 0, announce: bool = True
    ) -> str:
        """Commit refresh seq+1 as accounting does and return its exact text. `announce=False`
        leaves the PUBLISH out, as if the gateway missed it: the log still holds it."""
        self.seq += 1
        seq = self.seq
        if pad_chars:
            self.exchange = "x" * pad_chars
        symbols: list[dict[str, Any]] = []
        commits: list[SymbolCommit] = []
        total_trades = sum(len(v) for v in self.trades.values())
        for index, product_id in enumerate(self.product_ids):
            history = self.klines.setdefault(product_id, [])
            fills = self.trades.setdefault(product_id, [])
            new_klines: list[dict[str, Any]] = []
            replaced = 0
            if seq > 1:
                # every other refresh updates the forming kline, the others open a new one
                time_ms = FIRST_KLINE_MS + (seq // 2) * KLINE_PERIOD_MS
                kline = _kline(time_ms, 1800.0 + seq + index)
                if history and history[-1]["time"] == time_ms:
                    history.pop()
                    replaced = 1
                history.append(kline)
                del history[: -self.kline_history]
                new_klines.append(kline)
            new_trades: list[dict[str, Any]] = []
            for _ in range(trades):
                new_trades.append(_trade(self.next_order_id, FIRST_KLINE_MS + seq, 1800.0))
                self.next_order_id += 1
            fills += new_trades
            del fills[: -self.trade_history]
            total_trades += len(new_trades)
            scalars = _scalars(product_id, seq, fills)
            self.scalars[product_id] = scalars
            symbols.append(with_lists(scalars, trades=new_trades, klines=new_klines))
            commits.append(
                SymbolCommit(
                    product_id=product_id,
                    scalars=scalars,
                    replaced_klines=replaced,
                    klines=[orjson.dumps(k) for k in new_klines],
                    trades=[orjson.dumps(t) for t in new_trades],
                )
            )
        self.status = _status(seq, self.exchange, total_trades, len(self.product_ids))
        text = orjson.dumps(
            {
                "action": "refresh",
                "seq": seq,
                "epoch": self.epoch,
                "data": {"symbols": symbols, "status": self.status},
            }
        )
        self.published[seq] = text.decode()  # before the commit: a reader may be faster
        async with redis.pipeline(transaction=True) as tx:
            stage_refresh_commit(
                tx,
                bot=self.bot,
                seq=seq,
                refresh_text=text,
                status=self.status,
                symbols=commits,
                display=self.display,
                refresh_log_len=self.refresh_log_len,
                accounting_fields={"checkpoint": "0-0"},
            )
            if not announce:
                tx.command_stack.pop()  # the PUBLISH, staged last
            await tx.execute()
        return text.decode()

    def expected_init(self) -> dict[str, Any]:
        """The `init` that must be read at the current seq (SPEC section 2, 2.1 rule 11)."""
        symbols = [
            with_lists(
                self.scalars[p],
                trades=self.trades[p][-self.trade_history :],
                klines=self.klines[p][-self.kline_history :],
            )
            for p in self.product_ids
        ]
        return {
            "action": "init",
            "seq": self.seq,
            "epoch": self.epoch,
            "exchange": {"name": "sim", "makerFee": 0.1, "takerFee": 0.1},
            "symbols": symbols,
            "status": {**self.status, **CAPABILITIES},  # static flags of this deployment
        }


async def seed_bot(
    redis: Redis,
    bot: str,
    *,
    epoch: str | None = None,
    refresh_log_len: int = 1000,
    product_ids: tuple[str, ...] = ("ETH-USDT", "BTC-USDT"),
) -> SeededBot:
    """Create the bot's state with refresh seq 1 (SPEC 2.1 rule 5) and register its key hash."""
    seeded = SeededBot(
        bot=bot,
        epoch=epoch or new_epoch(),
        refresh_log_len=refresh_log_len,
        product_ids=product_ids,
    )
    await redis.hset(
        keys.meta(bot),
        mapping={"epoch": seeded.epoch, "seq": "0", "display": seeded.display.to_json()},
    )
    await redis.hset(keys.api_keys(), api_key_hash(seeded.api_key), bot)
    await seeded.publish(redis)
    return seeded
