"""`bandwagon ingest` options: flags, their environment equivalents, and the streams watched."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.config import BotsFile
from libs.errors import ConfigError
from services.ingest.main import Options, build_sources, parse_options, watched_streams
from services.ingest.sources import ReplaySource
from services.ingest.writer import StreamSpec

DATA = Path(__file__).parents[1] / "data"


def test_the_defaults_are_a_synthetic_walk_at_60x_with_seed_1() -> None:
    assert parse_options([], {}) == Options("synthetic", (), 60.0, 1, 500)


def test_environment_variables_stand_in_for_flags_and_flags_win() -> None:
    environ = {
        "BANDWAGON_SOURCE": "replay",
        "BANDWAGON_REPLAY": "ETH-USDT=a.csv, b.csv",
        "BANDWAGON_SPEED": "max",
        "BANDWAGON_SEED": "7",
    }
    assert parse_options([], environ) == Options(
        "replay", (("ETH-USDT", Path("a.csv")), (None, Path("b.csv"))), 0.0, 7, 500
    )
    flags = ["--replay", "c.csv", "--speed", "2.5", "--seed", "3", "--batch-size", "9"]
    assert parse_options(flags, environ) == Options("replay", ((None, Path("c.csv")),), 2.5, 3, 9)


def test_replay_files_imply_the_replay_source_and_speed_0_means_max() -> None:
    options = parse_options(["--replay", "x.csv", "--speed", "0"], {})
    assert (options.source, options.speed) == ("replay", 0.0)


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--speed", "fast"], {}, "--speed: fast: must be a number"),
        (["--speed", "-1"], {}, "--speed: -1: must be a number"),
        ([], {"BANDWAGON_SPEED": "nan"}, "BANDWAGON_SPEED: nan"),
        (["--source", "replay"], {}, "needs at least one file"),
        ([], {"BANDWAGON_SOURCE": "kafka"}, "BANDWAGON_SOURCE: kafka: must be one of"),
        (["--speed", "max"], {}, "synthetic source never ends"),
        ([], {"BANDWAGON_SEED": "x"}, "BANDWAGON_SEED: x: not an integer"),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_options(argv, environ)


def bots_file() -> BotsFile:
    symbol = {"min_size": "0.1", "price_decimals": 2}
    return BotsFile.model_validate(
        {
            "bots": [
                {"id": "a", "symbols": [{"product_id": "ETH-USDT", **symbol}]},
                {
                    "id": "b",
                    "symbols": [
                        {"product_id": "ETH-USDT", **symbol},
                        {"product_id": "SOL-USDT", **symbol},
                    ],
                },
                {"id": "c", "kline_size": "5m", "symbols": [{"product_id": "ETH-USDT", **symbol}]},
                {"id": "d", "enabled": False, "symbols": [{"product_id": "BTC-USDT", **symbol}]},
            ]
        }
    )


def test_one_stream_per_exchange_product_and_kline_size_of_the_enabled_bots() -> None:
    assert [stream.key for stream in watched_streams(bots_file())] == [
        "bw:market:{mexc.ETH-USDT.1m}",
        "bw:market:{mexc.SOL-USDT.1m}",
        "bw:market:{mexc.ETH-USDT.5m}",
    ]
    assert StreamSpec("mexc", "ETH-USDT", "5m").period_ms == 300_000


def test_a_replay_file_goes_to_its_product_or_to_every_stream() -> None:
    streams = watched_streams(bots_file())
    trades, klines = DATA / "trades-2000.csv", DATA / "klines-1m-3000.csv"
    options = parse_options(["--replay", f"SOL-USDT={klines}", "--replay", str(trades)], {})
    plans = build_sources(streams, options, start_time_ms=0)
    files = {
        stream.name: source.files for stream, source in plans if isinstance(source, ReplaySource)
    }
    assert files == {
        "mexc.ETH-USDT.1m": [trades],
        "mexc.SOL-USDT.1m": [klines, trades],
        "mexc.ETH-USDT.5m": [trades],
    }


def test_a_replay_for_an_unwatched_product_or_an_unknown_file_is_a_config_error(
    tmp_path: Path,
) -> None:
    streams = watched_streams(bots_file())
    unwatched = parse_options(["--replay", f"BTC-USDT={DATA / 'trades-2000.csv'}"], {})
    with pytest.raises(ConfigError, match="no enabled bot watches it"):
        build_sources(streams, unwatched, start_time_ms=0)
    (tmp_path / "x.csv").write_text("when,what\n")
    with pytest.raises(ConfigError, match="header must name"):
        build_sources(streams, parse_options(["--replay", str(tmp_path / "x.csv")], {}), 0)
    twice = parse_options(["--replay", str(DATA / "trades-2000.csv")] * 2, {})
    with pytest.raises(ConfigError, match="must be unique"):
        build_sources(streams, twice, start_time_ms=0)
