"""When accounting may publish a bot's next refresh (SPEC 2.1 rule 10, 5.1 rules 8 and 9), with
times computed by hand: refreshes at least 100 ms apart, a fill at the first moment 100 ms after
the previous refresh, any other change at the first moment `refresh_interval_ms` after it, and no
refresh at all when nothing a client sees has changed.

Pure: the book and the worker's cadence are fed events made by the real strategy code from real
klines, and no Redis is ever reached (`tests/e2e/test_spec_rules.py` checks the same rules on the
running services, with a generous margin for a loaded machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from libs.config import BotConfig
from libs.core.market import MarketUpdate
from libs.exchange.market_files import read_market_file
from libs.store.leases import LeaseKeeper
from libs.store.partitions import accounting_partitions
from libs.trading import new_symbol_strategy
from libs.wire.events import StrategyEvent
from libs.wire.market import encode_update
from services.accounting.book import BotBook
from services.accounting.worker import AccountingWorker
from services.strategy.worker import (
    BatchOutput,
    Partition,
    apply_entries,
    decode_entries,
    strategy_event,
)

KLINES = Path(__file__).parents[1] / "data" / "klines-1m-3000.csv"
# With period 5 and 0.5 standard deviations, the klines of this file at indexes 5 to 8 make
# fills and those before and just after them none: found once with the pure core, written here.
FIRST_FILL_INDEX = 5
LAST_FILL_OF_RUN_INDEX = 8
LAST_PUBLISH_S = 50.0  # accounting's clock at the previous refresh


def bot_config(refresh_interval_ms: int = 1000, **fields: Any) -> BotConfig:
    return BotConfig.model_validate(
        {
            "id": "cadence",
            "exchange": "binance",
            "start_capital": 1.0,
            "refresh_interval_ms": refresh_interval_ms,
            "strategy": {"order_type": "taker", "period": 5, "nbdev_up": 0.5, "nbdev_dn": 0.5},
            "symbols": [
                {
                    "product_id": "CAD-BTC",
                    "min_size": "0.01",
                    "price_decimals": 8,
                    "leverage": 2,
                    "isolated": True,
                }
            ],
            **fields,
        }
    )


def updates(count: int) -> list[MarketUpdate]:
    read = read_market_file(KLINES, 60_000)
    return [update for _, (_, update) in zip(range(count), read, strict=False)]


def events(bot: BotConfig, batches: list[list[MarketUpdate]]) -> list[StrategyEvent]:
    """The strategy worker's event for each batch of updates, as it would XADD it."""
    partition = Partition(bot, 0, "stream", new_symbol_strategy(bot, 0), "0-0")
    made = []
    entry = 0
    for batch in batches:
        output = BatchOutput()
        entries = []
        for update in batch:
            entry += 1
            entries.append((f"{entry}-0", encode_update(update, f"test:{entry}")))
        apply_entries(partition, decode_entries(entries), output)
        made.append(strategy_event(partition, output))
    return made


def worker_with(book: BotBook) -> AccountingWorker:
    """A worker holding `book`, its previous refresh at LAST_PUBLISH_S. Its Redis client is
    never connected: nothing here does IO."""
    redis = Redis(host="127.0.0.1", port=1)
    keeper = LeaseKeeper(
        redis, service="accounting", worker_id="a1", partitions=accounting_partitions([book.bot])
    )
    worker = AccountingWorker(redis, [book.bot], keeper, clock=lambda: LAST_PUBLISH_S)
    worker.books[book.bot.id] = book
    worker.last_publish_s[book.bot.id] = LAST_PUBLISH_S
    return worker


def book_after(bot: BotConfig, batches: list[list[MarketUpdate]]) -> BotBook:
    """A fresh book (seq 1) that applied the events of `batches`, the last one unpublished."""
    book = BotBook.fresh(bot, epoch="0123456789abcdef", seq=1)
    made = events(bot, batches)
    for number, event in enumerate(made[:-1], start=1):
        book.apply(f"{number}-0", event)
        refresh = book.next_refresh(0)
        assert refresh is not None
        book.published(refresh)
    book.apply(f"{len(made)}-0", made[-1])
    return book


def test_the_klines_used_here_fill_at_the_index_written_down() -> None:
    bot = bot_config()
    made = events(bot, [[update] for update in updates(LAST_FILL_OF_RUN_INDEX + 2)])
    assert [len(event.trades) for event in made] == [0, 0, 0, 0, 0, 1, 2, 2, 2, 0]


@pytest.mark.parametrize(
    ("refresh_interval_ms", "due_s"),
    [(100, 50.1), (250, 50.25), (1000, 51.0), (2000, 52.0), (60_000, 110.0)],
)
def test_a_change_without_a_fill_is_due_refresh_interval_ms_after_the_previous_refresh(
    refresh_interval_ms: int, due_s: float
) -> None:
    bot = bot_config(refresh_interval_ms)
    book = book_after(bot, [[update] for update in updates(FIRST_FILL_INDEX)])
    assert book.fill_pending is False
    assert worker_with(book)._due_s(book) == pytest.approx(due_s, abs=1e-9)


@pytest.mark.parametrize("refresh_interval_ms", [100, 1000, 60_000])
def test_an_applied_fill_is_due_100_ms_after_the_previous_refresh_whatever_the_interval(
    refresh_interval_ms: int,
) -> None:
    bot = bot_config(refresh_interval_ms)
    book = book_after(bot, [[update] for update in updates(FIRST_FILL_INDEX + 1)])
    assert book.fill_pending is True
    assert worker_with(book)._due_s(book) == pytest.approx(50.1, abs=1e-9)


def test_the_fill_is_due_even_when_other_changes_came_with_it() -> None:
    """Klines and a price change in the same event as the fill do not make it wait."""
    bot = bot_config(2000)
    klines = updates(FIRST_FILL_INDEX + 1)
    book = book_after(bot, [klines[:2], klines[2:]])
    assert book.fill_pending is True
    assert worker_with(book)._due_s(book) == pytest.approx(50.1, abs=1e-9)


def test_a_published_fill_leaves_nothing_pending_so_the_next_change_waits_the_interval() -> None:
    bot = bot_config(2000)
    klines = updates(LAST_FILL_OF_RUN_INDEX + 2)
    book = book_after(bot, [[update] for update in klines[:-1]])
    assert book.fill_pending is True
    refresh = book.next_refresh(0)
    assert refresh is not None
    book.published(refresh)
    book.apply("100-0", events(bot, [[update] for update in klines])[-1])
    assert book.fill_pending is False
    assert worker_with(book)._due_s(book) == pytest.approx(52.0, abs=1e-9)


def test_an_event_that_changes_nothing_a_client_sees_makes_no_refresh() -> None:
    bot = bot_config()
    (event,) = events(bot, [updates(3)])
    book = BotBook.fresh(bot, epoch="0123456789abcdef", seq=1)
    book.apply("1-0", event)
    refresh = book.next_refresh(-480)
    assert refresh is not None and refresh.seq == 2
    book.published(refresh)

    assert book.next_refresh(-480) is None  # nothing applied since
    book.apply("2-0", event)  # the same figures, klines and trades again
    assert book.next_refresh(-480) is None
    assert book.next_refresh(300) is not None  # a STATUS field differs: that is a change


def test_refresh_interval_ms_lies_in_100_to_60000() -> None:
    """SPEC 5.1 rule 8; below 100 ms two refreshes could not be 100 ms apart."""
    for accepted in (100, 60_000):
        assert bot_config(accepted).refresh_interval_ms == accepted
    for refused in (99, 60_001, 0):
        with pytest.raises(ValidationError, match="refresh_interval_ms"):
            bot_config(refused)


def test_refresh_log_len_is_1000_by_default_and_at_least_100() -> None:
    """SPEC 5.1 rule 9."""
    assert bot_config().refresh_log_len == 1000
    assert bot_config(refresh_log_len=100).refresh_log_len == 100
    with pytest.raises(ValidationError, match="refresh_log_len"):
        bot_config(refresh_log_len=99)
