"""How `bandwagon backtest` picks its bot, applies its flags and reads its time bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.config import DEFAULT_CONFIG_PATH, load_bots
from libs.core.batch import UpdateColumns
from libs.errors import ConfigError
from libs.exchange.market_files import (
    FileKind,
    price_decimals_of,
    read_market_file,
    written_decimals,
)
from tools.backtest.inputs import (
    MarketFile,
    TimeRange,
    apply_overrides,
    choose_bot,
    infer_price_decimals,
    load_updates,
    parse_market_file,
    parse_time_ms,
    with_default_terms,
)
from tools.backtest.sweep import combinations, parse_grid

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


def test_the_demo_lends_no_price_decimals_to_a_file_it_does_not_describe() -> None:
    """The demo's ETH-USDT writes prices with 2 decimals: a file of prices near 0.0016 would
    trade at "0.00". Its decimals are read off the file instead (`infer_price_decimals`)."""
    assert choose_bot(None, None, "ALT-BTC").symbols[0].price_decimals is None
    assert choose_bot(None, None, None).symbols[0].price_decimals is None  # no --symbol
    assert choose_bot(None, None, "BTC-USDT").symbols[0].price_decimals == 1  # the demo's own
    assert choose_bot(None, None, "ETH-USDT").symbols[0].price_decimals == 2


@pytest.mark.parametrize(
    ("text", "decimals"),
    [
        ("0.00162008", 8),
        ("0.00161", 5),
        ("2000.10", 1),  # a trailing zero needs no decimal
        ("2000.0", 0),
        ("2000", 0),
        ("1.5e-05", 6),  # 0.000015
        ("9.417E-05", 8),
        ("1e+3", 0),
        (".5", 1),
        (" 0.25 ", 2),
        ("0", None),
        ("0.000", None),
        ("-0.5", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        ("0.0.1", None),
    ],
)
def test_a_prices_decimals_are_read_off_its_text(text: str, decimals: int | None) -> None:
    assert written_decimals(text) == decimals


def test_a_klines_files_price_decimals_are_the_most_among_open_high_low_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "klines.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "60000,0.0016,0.00162,0.0015,0.00161,123.123456789123\n"  # volume: 12, not a price
        "120000,0.00161,0.001625,0.00161,0.00162,1e-09\n"  # high: 0.001625, 6 decimals
        "180000,0.00162,0.00162,0.00162,0.0016200000,0\n"  # trailing zeros: 5
    )
    assert price_decimals_of(path) == 6


def test_a_trades_files_price_decimals_are_the_most_among_its_prices(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(
        "time,id,side,price,amount\n"
        "1000,1,buy,0.00141342,0.123456789012\n"  # 8; the amount's 12 do not count
        "2000,2,sell,1.5e-05,3\n"  # 6
        "3000,3,sell,nan,3\n"  # not a price: the row is rejected anyway
    )
    assert price_decimals_of(path) == 8
    assert price_decimals_of(DATA / "trades-2000.csv") == 8


def test_a_file_without_a_price_has_no_decimals_and_more_than_18_are_18(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("time,open,high,low,close,volume\n")
    assert price_decimals_of(empty) is None
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("time,id,price,amount\n1,1,0.0000000000000000000012,1\n")  # 22 decimals
    assert price_decimals_of(tiny) == 18  # price_decimals allows 0 to 18


def test_price_decimals_nothing_gives_are_read_off_the_file_with_a_note() -> None:
    bot = choose_bot(None, None, "ALT-BTC")
    files = [MarketFile("ALT-BTC", DATA / "klines-1m-3000.csv", FileKind.KLINES)]
    inferred, notes = infer_price_decimals(bot, files)
    assert inferred.symbols[0].price_decimals == 8  # 0.00162008, the file's first row
    assert inferred.symbols[0].terms.min_size == "0.00001"  # never inferred
    assert notes == [
        f"ALT-BTC: price_decimals 8, the most decimals among the prices of {files[0].path}"
        " (--price-decimals sets it)"
    ]


def test_price_decimals_a_flag_or_the_config_gives_are_kept(tmp_path: Path) -> None:
    files = [MarketFile("ALT-BTC", DATA / "klines-1m-3000.csv", FileKind.KLINES)]
    flagged = apply_overrides(
        choose_bot(None, None, "ALT-BTC"), {"price-decimals": "3"}, ["ALT-BTC"]
    )
    assert infer_price_decimals(flagged, files)[0].symbols[0].price_decimals == 3
    assert infer_price_decimals(flagged, files)[1] == []
    config = tmp_path / "bots.yaml"
    config.write_text(
        "bots:\n  - id: two\n    symbols:\n"
        '      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 4}\n'
        '      - {product_id: XRP-ETH, min_size: "0.1"}\n'  # price_decimals left to a source
    )
    two = choose_bot(config, None, None)
    both = [*files, MarketFile("XRP-ETH", DATA / "trades-2000.csv", FileKind.TRADES)]
    inferred, notes = infer_price_decimals(two, both)
    assert [s.price_decimals for s in inferred.symbols] == [4, 8]
    assert len(notes) == 1 and notes[0].startswith("XRP-ETH: price_decimals 8, ")


def test_a_bots_file_silent_on_terms_gets_spec_s_defaults_and_a_note(tmp_path: Path) -> None:
    config = tmp_path / "bots.yaml"
    config.write_text(
        "bots:\n  - id: live\n    symbols:\n"
        "      - {product_id: ALT-BTC}\n"
        '      - {product_id: XRP-ETH, min_size: "0.1"}\n'
        '      - {product_id: SOL-USDT, min_size: "0.1", price_decimals: 3}\n'
    )
    bot, notes = with_default_terms(choose_bot(config, None, None), set())
    assert [(s.min_size, s.price_decimals) for s in bot.symbols] == [
        ("0.00001", 2),
        ("0.1", 2),
        ("0.1", 3),
    ]
    assert notes == [
        "ALT-BTC: min_size and price_decimals SPEC's default (min_size 0.00001, price_decimals"
        " 2): the bots file leaves them out (--min-size, --price-decimals set them)",
        "XRP-ETH: price_decimals SPEC's default (min_size 0.00001, price_decimals 2): the bots"
        " file leaves them out (--min-size, --price-decimals set them)",
    ]


def test_nbdev_sets_both_deviations_and_a_specific_flag_wins() -> None:
    bot = choose_bot(None, None, None)
    both = apply_overrides(bot, {"nbdev": "1.5"}, ["ETH-USDT"])
    assert (both.strategy.nbdev_up, both.strategy.nbdev_dn) == (1.5, 1.5)
    mixed = apply_overrides(bot, {"nbdev-up": "3", "nbdev": "1.5"}, ["ETH-USDT"])
    assert (mixed.strategy.nbdev_up, mixed.strategy.nbdev_dn) == (3.0, 1.5)


def test_another_strategy_starts_from_its_own_defaults_and_keeps_the_shared_parameters() -> None:
    bot = apply_overrides(
        choose_bot(None, None, None), {"order-type": "taker", "buy-pct": "30"}, ["ETH-USDT"]
    )
    rsi = apply_overrides(bot, {"strategy": "RSI", "period": "10"}, ["ETH-USDT"])
    assert rsi.strategy.name == "RSI"
    assert rsi.strategy.parameters == {
        "period": 10,
        "window": 100,
        "oversold": 30.0,
        "overbought": 70.0,
    }
    assert (rsi.strategy.order_type, rsi.strategy.buy_pct) == ("taker", 30.0)
    with pytest.raises(ConfigError) as error:  # Bollinger's parameter, not RSI's
        apply_overrides(bot, {"strategy": "RSI", "nbdev": "2"}, ["ETH-USDT"])
    assert str(error.value).startswith("config error: --nbdev: 2: ")
    with pytest.raises(ConfigError) as error:
        apply_overrides(bot, {"strategy": "MACD", "fast": "30"}, ["ETH-USDT"])
    assert str(error.value).startswith("config error: --fast: 30: fast must be below slow")


def test_risk_exits_are_set_by_flag_and_turned_off_by_off() -> None:
    bot = choose_bot(None, None, None)
    stopped = apply_overrides(bot, {"stop-loss-pct": "2.5", "trailing-stop-pct": "1"}, ["ETH-USDT"])
    assert (stopped.strategy.stop_loss_pct, stopped.strategy.trailing_stop_pct) == (2.5, 1.0)
    assert stopped.strategy.take_profit_pct is None
    off = apply_overrides(stopped, {"stop-loss-pct": "off"}, ["ETH-USDT"])
    assert off.strategy.stop_loss_pct is None
    with pytest.raises(ConfigError) as error:
        apply_overrides(bot, {"take-profit-pct": "0"}, ["ETH-USDT"])
    assert str(error.value).startswith("config error: --take-profit-pct: 0: ")


def test_a_plug_in_parameter_goes_beside_the_others_and_a_built_in_refuses_it() -> None:
    bot = choose_bot(None, None, None)
    with pytest.raises(ConfigError) as error:
        apply_overrides(bot, {"param:colour": "red"}, ["ETH-USDT"])
    assert str(error.value).startswith("config error: --param: colour=red: ")
    plugin = apply_overrides(
        bot, {"strategy": "my.module:Mine", "param:colour": "red"}, ["ETH-USDT"]
    )
    assert plugin.strategy.parameters == {"colour": "red"}


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
    assert [s.leverage for s in bot.symbols] == [10.0, 7.0]  # SPEC 4.1 rule 10's default, 7
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
    for bad in (["period"], ["col our=red"], ["period="], ["period=1", "period=2"]):
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
