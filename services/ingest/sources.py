"""Market sources: each turns into an iterator of `(src, update)` for one stream, resuming after
the stream's last entry so that a restarted ingest writes no duplicate and leaves no gap.

Sources are plain synchronous iterators; `services.ingest.writer.run_stream` paces them and
writes. `src` (the `src` field of an entry) says where an update came from:
`replay:<file name>:<line>` or `synthetic:<trade number>`. It is how a restart finds its place.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from libs.core.market import MarketUpdate, Trade, TradeKlineBuilder
from libs.core.periods import kline_close_time
from libs.exchange.market_files import Reject, read_market_file


@dataclass(frozen=True, slots=True)
class LastEntry:
    """A stream's newest entry, read at start (XREVRANGE COUNT 1)."""

    entry_id: str
    src: str
    update: MarketUpdate


@dataclass(frozen=True, slots=True)
class Item:
    src: str
    update: MarketUpdate


RejectHandler = Callable[[str, int, Reject], None]
"""(source label, line, reject): report a bad row; the source goes on."""

MismatchHandler = Callable[[str, int], None]
"""(source label, line): the row a restart resumes after no longer matches the stream's entry."""


class Source(Protocol):
    label: str

    def items(self, last: LastEntry | None) -> Iterator[Item]: ...


class ReplaySource:
    """One or more CSV files (klines or trades, told by the header) played in order into one
    stream. On restart the files are read again from the top, so klines built from trades are
    rebuilt exactly, and only rows after the line named by the stream's last `src` are emitted."""

    def __init__(
        self,
        files: list[Path],
        period_ms: int,
        on_reject: RejectHandler,
        on_mismatch: MismatchHandler | None = None,
    ) -> None:
        self.files = files
        self.period_ms = period_ms
        self.on_reject = on_reject
        self.on_mismatch = on_mismatch
        self.label = "replay:" + ",".join(path.name for path in files)

    def resume_point(self, last: LastEntry | None) -> tuple[int, int]:
        """(index of the file to start with, last line of it already written)."""
        if last is None or not last.src.startswith("replay:"):
            return 0, 0
        name, _, line = last.src[len("replay:") :].rpartition(":")
        if not line.isdigit():
            return 0, 0
        for index in range(len(self.files) - 1, -1, -1):
            if self.files[index].name == name:
                return index, int(line)
        return 0, 0

    def items(self, last: LastEntry | None) -> Iterator[Item]:
        start_index, written_line = self.resume_point(last)
        for index in range(start_index, len(self.files)):
            path = self.files[index]
            label = f"replay:{path.name}"
            skip_through = written_line if index == start_index else 0

            def rejected(reject: Reject, label: str = label, skip: int = skip_through) -> None:
                if reject.line > skip:  # reported in the earlier run already
                    self.on_reject(label, reject.line, reject)

            for line, update in read_market_file(path, self.period_ms, rejected):
                if line <= skip_through:
                    if (
                        line == skip_through
                        and last is not None
                        and update != last.update
                        and self.on_mismatch is not None
                    ):
                        self.on_mismatch(label, line)
                    continue
                yield Item(f"{label}:{line}", update)


# --- Synthetic: a seeded random walk of trades ----------------------------------------------------

BASE_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
DEFAULT_BASE_PRICE = 100.0
MEAN_TRADE_GAP_MS = 3_000.0  # about 20 trades a 1m kline
STEP_SIGMA = 0.0006  # log-price noise per trade: about 0.27 % a minute
REVERSION = 0.001  # pull of the log price back to the base, per trade
NOTIONAL = 500.0  # typical trade size in quote currency


def base_price(product_id: str) -> float:
    return BASE_PRICES.get(product_id.split("-", 1)[0], DEFAULT_BASE_PRICE)


@dataclass(frozen=True, slots=True)
class Step:
    gap_ms: int
    price: float
    amount: float


class RandomWalk:
    """Mean-reverting log-price walk, one step a trade. Step `n` draws from its own generator
    seeded by (seed, product, n), and the next price depends only on the previous (rounded) one:
    a restart that knows `n` and the last price continues the very same sequence.

    With these constants Bollinger(20, 2) on 1m klines is crossed about every 4 event-minutes.
    """

    def __init__(self, seed: int, product_id: str) -> None:
        self.seed = seed
        self.product_id = product_id
        self.base = base_price(product_id)
        self.price_decimals = max(0, 5 - math.floor(math.log10(self.base)))

    def step(self, n: int, price: float) -> Step:
        rng = random.Random(f"{self.seed}:{self.product_id}:{n}")
        gap_ms = int(rng.expovariate(1.0 / MEAN_TRADE_GAP_MS))
        log_deviation = math.log(price / self.base)
        log_deviation += -REVERSION * log_deviation + STEP_SIGMA * rng.gauss(0.0, 1.0)
        tick = 10.0**-self.price_decimals
        new_price = max(round(self.base * math.exp(log_deviation), self.price_decimals), tick)
        amount = float(f"{NOTIONAL / new_price * math.exp(rng.gauss(0.0, 1.0)):.4g}")
        return Step(gap_ms=gap_ms, price=new_price, amount=amount)


class SyntheticSource:
    """Trades of a `RandomWalk`, aggregated into klines by the same `TradeKlineBuilder` as a
    trades replay. Event time starts at `start_time_ms` (the wall clock at start); the pacing of
    `run_stream` makes it advance at `speed` times wall time."""

    def __init__(self, seed: int, product_id: str, period_ms: int, start_time_ms: int) -> None:
        self.walk = RandomWalk(seed, product_id)
        self.period_ms = period_ms
        self.start_time_ms = start_time_ms
        self.label = "synthetic"

    def items(self, last: LastEntry | None) -> Iterator[Item]:
        n = 0
        price = self.walk.base
        time_ms = self.start_time_ms
        builder = TradeKlineBuilder(self.period_ms)
        if last is not None and last.src.startswith("synthetic:"):
            n = int(last.src[len("synthetic:") :])
            price = last.update.price
            time_ms = max(last.update.time_ms, self.start_time_ms)
            builder = TradeKlineBuilder.after(self.period_ms, last.update, str(n))
        elif last is not None:  # another source wrote last: start in the next period, not in its
            next_period = kline_close_time(last.update.kline.time_ms, self.period_ms) + 1
            time_ms = max(self.start_time_ms, next_period, last.update.time_ms)
        while True:
            n += 1
            step = self.walk.step(n, price)
            time_ms += step.gap_ms
            price = step.price
            update = builder.accept(Trade(time_ms, str(n), price, step.amount))
            yield Item(f"synthetic:{n}", update)
