"""The notify bench's pure helpers: the bots file, the dead webhooks' layout, the reference's
bodies, latencies and the checks of what arrived."""

from __future__ import annotations

import math

import orjson
import pytest
import yaml

from benches.notify_speed import (
    EPOCH,
    PRODUCT_ID,
    SECRET_ENV,
    bots_yaml,
    dead_label,
    dead_layout,
    delivery_id_of,
    latencies_s,
    order_of,
    problems,
    reference_body,
    spread,
    trade_json,
)
from libs.config import MAX_WEBHOOKS, BotsFile
from libs.store.notices import FeedEntry
from services.notify.worker import deliveries_of


def test_the_bots_file_is_valid_and_every_webhook_hears_fills_only() -> None:
    hooks = {"a": ["http://127.0.0.1:1/hook", "http://127.0.0.1:2/x"], "b": ["http://h:3/b"]}
    bots = BotsFile.model_validate(yaml.safe_load(bots_yaml(hooks)))
    assert [bot.id for bot in bots.bots] == ["a", "b"]
    assert [hook.url for hook in bots.bots[0].notify] == hooks["a"]
    assert {hook.events for bot in bots.bots for hook in bot.notify} == {("fill",)}
    assert {hook.secret_env for bot in bots.bots for hook in bot.notify} == {SECRET_ENV}


@pytest.mark.parametrize(
    ("dead", "layout"), [(1, [1]), (7, [7]), (8, [7, 1]), (20, [7, 8, 5]), (23, [7, 8, 8])]
)
def test_dead_webhooks_fill_the_measured_bot_first_then_8_a_bot(
    dead: int, layout: list[int]
) -> None:
    assert dead_layout(dead) == layout
    assert layout[0] + 1 <= MAX_WEBHOOKS and all(n <= MAX_WEBHOOKS for n in layout)


def test_the_dead_webhooks_label_says_where_they_are() -> None:
    assert dead_label(3) == "3 beside the healthy one, hearing every fill"
    assert dead_label(20) == (
        "7 beside the healthy one, hearing every fill; 8 + 5 on 2 other bots, one fill each"
    )


def test_the_reference_posts_the_very_body_notify_builds_from_the_feed_entry() -> None:
    bots = BotsFile.model_validate(yaml.safe_load(bots_yaml({"t00": ["http://h:1/hook"]})))
    hook = bots.bots[0].notify[0]
    entry = FeedEntry.from_fields(
        "1-0",
        {
            "kind": "fill",
            "epoch": EPOCH,
            "product_id": PRODUCT_ID,
            "trade": trade_json(42).decode(),
        },
    )
    made = deliveries_of("t00", {hook.hook_id: hook}, entry, now_ms=0)
    [delivery] = made[hook.hook_id]
    assert delivery.body == reference_body("t00", 42)
    assert delivery.delivery_id == delivery_id_of(42)
    assert order_of(delivery_id_of(42)) == 42
    assert orjson.loads(delivery.body)["trade"]["order_id"] == 42


def test_latency_counts_the_first_arrival_of_each_id_against_its_commit() -> None:
    committed = {1: 10.0, 2: 11.0}
    arrived = [(delivery_id_of(1), 10.004), (delivery_id_of(2), 11.010), (delivery_id_of(1), 12.0)]
    assert latencies_s(committed, arrived) == pytest.approx([0.004, 0.010])
    assert latencies_s(committed, [(delivery_id_of(3), 1.0)]) == []


def test_problems_name_repeats_gaps_order_and_signatures() -> None:
    expected = [delivery_id_of(n) for n in (1, 2, 3)]
    assert problems(expected, expected, 0) == []
    found = problems([expected[1], expected[0], expected[0]], expected, 2)
    assert found == ["1 repeated", "1 missing", "out of id order", "2 bad signatures"]


def test_spread_of_nothing_is_nan() -> None:
    assert math.isnan(spread([]).p50) and spread([]).count == 0
    assert spread([0.001, 0.003, 0.002]).p50 == pytest.approx(0.002)
