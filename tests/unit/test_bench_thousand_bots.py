"""The thousand-bots bench's pure helpers: the bots' markets, the bots file, fill -> client."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import yaml

from benches.thousand_bots import (
    FillSeen,
    Receipt,
    beyond_wait_s,
    bot_markets,
    bots_yaml,
    fills_received,
    latency_s,
    product_id,
    step_rate,
    trade_number,
)
from libs.config import BotsFile


def test_every_bot_has_three_distinct_markets_and_every_market_is_used_evenly() -> None:
    markets = [bot_markets(index) for index in range(1000)]
    assert all(len(set(triple)) == 3 for triple in markets)
    uses = Counter(market for triple in markets for market in triple)
    assert sorted(uses) == list(range(30))
    assert max(uses.values()) - min(uses.values()) <= 2
    assert bot_markets(7) == bot_markets(7)


def test_the_bots_file_is_valid_and_names_one_key_variable_per_bot() -> None:
    bots = BotsFile.model_validate(yaml.safe_load(bots_yaml(40)))
    assert len(bots.bots) == 40
    assert len({bot.api_key_env for bot in bots.bots}) == 40
    assert [s.product_id for s in bots.bots[1].symbols] == [product_id(m) for m in bot_markets(1)]
    assert bots.bots[0].strategy.order_type == "taker"


def test_each_client_receipt_of_a_fill_counts_with_that_clients_previous_refresh() -> None:
    receipts = [
        Receipt(client=0, bot="a", seq=2, at_ms=1000.0),
        Receipt(client=0, bot="a", seq=3, at_ms=1150.0),
        Receipt(client=1, bot="a", seq=3, at_ms=1160.0),
        Receipt(client=1, bot="a", seq=4, at_ms=1300.0),
    ]
    fills = {("a", 3): [("X-USDT", 5)], ("a", 4): [("X-USDT", 9)]}
    xadd = {("X-USDT", 5): 1100.0}  # the update of the second fill is unknown: left out
    seen = fills_received(receipts, fills, xadd)
    assert seen == [FillSeen(1100.0, 1150.0, 1000.0), FillSeen(1100.0, 1160.0, None)]
    assert [latency_s(fill) for fill in seen] == pytest.approx([0.05, 0.06])
    # client 0 could not have had it before 1000 + 100 ms: 50 ms beyond; client 1: 60 ms
    assert [beyond_wait_s(fill) for fill in seen] == pytest.approx([0.05, 0.06])
    assert beyond_wait_s(FillSeen(900.0, 1150.0, 1000.0)) == pytest.approx(0.05)


def test_trade_number_reads_the_synthetic_src() -> None:
    assert trade_number("synthetic:42") == 42
    with pytest.raises(ValueError):
        trade_number("replay:file.csv:3")


def test_step_rate_counts_whole_steps_between_the_first_and_the_last() -> None:
    samples = [(0.0, 0.0), (1.0, 0.0), (2.0, 100.0), (3.0, 100.0), (4.0, 200.0), (5.0, 200.0)]
    assert step_rate(samples) == pytest.approx(50.0)  # 100 between t=2 and t=4
    assert math.isnan(step_rate([(0.0, 0.0), (1.0, 5.0), (2.0, 5.0)]))
