"""How `bandwagon backtest` picks its bot, applies its flags and reads its time bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.config import DEFAULT_CONFIG_PATH, load_bots
from libs.core.batch import UpdateColumns
from libs.errors import ConfigError
from libs.market_files import read_market_file
from services.backtest.inputs import (
    TimeRange,
    apply_overrides,
    choose_bot,
    load_updates,
    parse_market_file,
    parse_time_ms,
)
from services.backtest.sweep import combinations, parse_grid

DATA = Path(__file__).parents[1] / "data"


def test_without_config_the_demo_bot_is_narrowed_to_the_symbol_named() -> None:
    demo = load_bots(DEFAULT_CONFIG_PATH).bots[0]
    btc = choose_bot(None, None, "BTC-USDT")
    assert [s.product_id for s in btc.symbols] == ["BTC-USDT"]
    assert btc.symbols[0] == demo.symbols[1] and btc.allocation(0) == demo.start_capital
    other = choose_bot(None, None, "ALT-BTC")  # not in the demo: the first symbol's terms
    assert other.symbols[0].product_id == "ALT-BTC"
    assert other.symbols[0].min_size == demo.symbols[0].min_size
    assert choose_bot(None, None, None).symbols[0].product_id == "ETH-USDT"


def test_nbdev_sets_both_deviations_and_a_specific_flag_wins() -> None:
    bot = choose_bot(None, None, None)
    both = apply_overrides(bot, {"nbdev": "1.5"}, ["ETH-USDT"])
    assert (both.strategy.nbdev_up, both.strategy.nbdev_dn) == (1.5, 1.5)
    mixed = apply_overrides(bot, {"nbdev-up": "3", "nbdev": "1.5"}, ["ETH-USDT"])
    assert (mixed.strategy.nbdev_up, mixed.strategy.nbdev_dn) == (3.0, 1.5)


def test_symbol_flags_change_only_the_symbols_given_files(tmp_path: Path) -> None:
    config = tmp_path / "bots.yaml"
    config.write_text(
        "bots:\n  - id: two\n    symbols:\n"
        '      - {product_id: AAA-USDT, min_size: "0.1", price_decimals: 2}\n'
        '      - {product_id: BBB-USDT, min_size: "0.1", price_decimals: 2}\n'
    )
    bot = apply_overrides(
        choose_bot(config, "two", None), {"leverage": "7", "taker-fee": "0.2"}, ["BBB-USDT"]
    )
    assert [s.leverage for s in bot.symbols] == [1.0, 7.0]
    assert bot.taker_fee == 0.2


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("period", "1", "config error: --period: 1: "),
        ("period", "2.5", "config error: --period: 2.5: "),
        ("order-type", "limit", "config error: --order-type: limit: "),
        ("leverage", "0", "config error: --leverage: 0: "),
        ("min-size", "-1", "config error: --min-size: -1: "),
    ],
)
def test_a_bad_flag_value_is_a_config_error_naming_the_flag(
    option: str, value: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as error:
        apply_overrides(choose_bot(None, None, None), {option: value}, ["ETH-USDT"])
    assert str(error.value).startswith(shown)


def test_times_are_unix_ms_or_iso_dates_in_utc() -> None:
    assert parse_time_ms("--from", "1509836520000") == 1509836520000
    assert parse_time_ms("--from", "2017-11-05") == 1509840000000
    assert parse_time_ms("--from", "2017-11-05T01:00") == 1509843600000
    assert parse_time_ms("--from", "2017-11-05T09:00+08:00") == 1509843600000
    with pytest.raises(ConfigError, match="--to: soon"):
        parse_time_ms("--to", "soon")


def test_a_file_goes_to_the_symbol_it_names_and_must_be_of_the_flags_kind() -> None:
    bot = choose_bot(None, None, "ALT-BTC")
    named = parse_market_file("--klines", f"ALT-BTC={DATA / 'klines-1m-3000.csv'}", bot, None)
    assert named.product_id == "ALT-BTC"
    with pytest.raises(ConfigError, match="is a trades file: give it with --trades"):
        parse_market_file("--klines", str(DATA / "trades-2000.csv"), bot, None)
    with pytest.raises(ConfigError, match="has no symbol XRP-ETH"):
        parse_market_file("--trades", f"XRP-ETH={DATA / 'trades-2000.csv'}", bot, None)


def test_a_sweep_grid_is_every_combination_in_order() -> None:
    grid = parse_grid(["period=14,20", "nbdev_up=1.5,2"])
    assert grid == [("period", ["14", "20"]), ("nbdev-up", ["1.5", "2"])]
    assert combinations(grid) == [
        {"period": "14", "nbdev-up": "1.5"},
        {"period": "14", "nbdev-up": "2"},
        {"period": "20", "nbdev-up": "1.5"},
        {"period": "20", "nbdev-up": "2"},
    ]
    for bad in (["period"], ["colour=red"], ["period="], ["period=1", "period=2"]):
        with pytest.raises(ConfigError, match="--sweep"):
            parse_grid(bad)


@pytest.mark.parametrize("name", ["klines-1m-3000.csv", "trades-2000.csv"])
def test_the_updates_in_a_time_range_are_the_rows_of_that_range(name: str) -> None:
    path = DATA / name
    bot = choose_bot(None, None, "ALT-BTC")
    option = "--klines" if name.startswith("klines") else "--trades"
    files = (parse_market_file(option, f"ALT-BTC={path}", bot, None),)
    rows = [update for _, update in read_market_file(path, bot.period_ms)]
    span = TimeRange(rows[100].time_ms, rows[900].time_ms)
    columns = load_updates(files, bot.period_ms, span, quiet=True)["ALT-BTC"]
    expected = UpdateColumns.of([update for update in rows if span.holds(update.time_ms)])
    assert len(columns) == len(expected) > 0
    for name_ in ("time_ms", "price", "kline_time_ms", "open", "high", "low", "close", "volume"):
        assert getattr(columns, name_).tobytes() == getattr(expected, name_).tobytes()
    whole = load_updates(files, bot.period_ms, TimeRange(), quiet=True)["ALT-BTC"]
    assert len(whole) == len(rows)
