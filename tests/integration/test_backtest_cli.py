"""`bandwagon backtest` as a process on the test data: its JSON against the core driven directly,
its plots as real files, `--from/--to`, config errors (exit 78) and the sweep's ranking."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from libs.config import BotConfig
from libs.core.market import MarketUpdate
from libs.exchange.market_files import read_market_file
from libs.trading import new_symbol_strategy
from libs.wire.convert import trade_wire
from libs.wire.status import StatusOut, TradeOut

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).parents[2]
KLINES = ROOT / "tests" / "data" / "klines-1m-3000.csv"
TRADES = ROOT / "tests" / "data" / "trades-2000.csv"
SYMBOL = ["--symbol", "ALT-BTC", "--price-decimals", "8", "--min-size", "0.01"]


def backtest(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "backtest", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "TZ": "UTC", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=50,
    )


def demo_bot_for_alt(**strategy: Any) -> BotConfig:
    """What the command's defaults amount to, written out independently: the demo bot's first
    symbol with the flags of `SYMBOL` (SPEC 4.1 rule 10 defaults otherwise)."""
    return BotConfig.model_validate(
        {
            "id": "demo",
            "strategy": strategy,
            "symbols": [
                {"product_id": "ALT-BTC", "min_size": "0.01", "price_decimals": 8, "leverage": 10}
            ],
        }
    )


def core_trades(bot: BotConfig, updates: list[MarketUpdate]) -> list[dict[str, Any]]:
    strategy = new_symbol_strategy(bot, 0)
    return [trade_wire(f, 8) for update in updates for f in strategy.on_update(update).fills]


def klines(bot: BotConfig) -> list[MarketUpdate]:
    return [update for _, update in read_market_file(KLINES, bot.period_ms)]


def test_it_writes_the_json_the_plots_and_prints_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = backtest("--klines", KLINES, *SYMBOL, "--json", out, "--plot", tmp_path / "p.html")
    assert done.returncode == 0, done.stderr
    document = orjson.loads(out.read_bytes())
    bot = demo_bot_for_alt()
    expected = core_trades(bot, klines(bot))
    assert len(expected) > 50
    assert document["trades"] == expected
    StatusOut.model_validate(document["status"])
    for trade in document["trades"]:
        TradeOut.model_validate(trade)
    assert document["status"]["tradeNum"] == len(expected)
    assert document["status"]["timeZoneOffset"] == 0  # TZ=UTC
    assert document["status"]["startTime"] == klines(bot)[0].time_ms
    assert [s["product_id"] for s in document["symbols"]] == ["ALT-BTC"]
    # the report, on stdout
    fills_line = next(line for line in done.stdout.splitlines() if "trades (fills)" in line)
    assert fills_line.split()[-2] == str(len(expected))
    for figure in ("win rate", "max drawdown", "exposure", "buy & hold", "fees paid"):
        assert figure in done.stdout
    assert f"wrote {out}" in done.stdout
    html = (tmp_path / "p.html").read_text()
    assert "<html>" in html and "plotly" in html and len(html) > 1_000_000  # plotly.js inside
    assert not re.search(r"<script[^>]*\bsrc=", html), "self-contained: no script to fetch"
    assert "buy: open long" in html and "sell: open short" in html and "equity" in html


def test_it_draws_a_png(tmp_path: Path) -> None:
    done = backtest("--klines", KLINES, *SYMBOL, "--plot", tmp_path / "p.png", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    from matplotlib import image

    picture = image.imread(tmp_path / "p.png")
    height, width = picture.shape[:2]
    assert width > 800 and height > 400


def plotted_traces(html: str) -> dict[str, str]:
    """The page's plotly traces: name -> the y axis (subplot row) it is drawn on."""
    names = re.findall(r'"name":"([^"]*)"', html)
    axes = re.findall(r'"yaxis":"(y\d*)"', html)
    assert len(names) == len(axes) > 0
    return dict(zip(names, axes, strict=True))


def test_it_plots_a_plugin_with_risk_exits_and_rsi_in_a_pane(tmp_path: Path) -> None:
    """Through the command: a plug-in (on PYTHONPATH) with its channel over the price and risk
    exit markers; RSI in a pane below the price, its guides where `--oversold` put them."""
    env = {**os.environ, "TZ": "UTC", "PYTHONPATH": f"{ROOT}:{ROOT / 'examples' / 'strategies'}"}
    exits = ["--order-type", "taker", "--stop-loss-pct", "0.3", "--take-profit-pct", "0.6"]
    plugin = ["--strategy", "donchian:DonchianBreakout", "--param", "period=30", *exits]
    rsi = ["--strategy", "RSI", "--oversold", "20"]
    for name, flags in (("donchian", plugin), ("rsi", rsi)):
        for suffix in ("html", "png"):
            out = str(tmp_path / f"{name}.{suffix}")
            command = ["-m", "tools.cli", "backtest", "--klines", str(KLINES), *SYMBOL, *flags]
            done = subprocess.run(
                [sys.executable, *command, "--plot", out, "--quiet"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=50,
            )
            assert done.returncode == 0, done.stderr
    html = (tmp_path / "donchian.html").read_text()
    assert "Backtest of bot demo: Donchian (period 30), both, taker, stop loss 0.3 %" in html
    traces = plotted_traces(html)
    assert {traces[name] for name in ("upper", "lower", "close", "buy: open long")} == {"y"}
    assert traces["stop loss exit"] == traces["take profit exit"] == "y"
    assert traces["equity"] == "y2"  # no pane: the channel is on the price scale
    traces = plotted_traces((tmp_path / "rsi.html").read_text())
    assert traces["close"] == "y" and traces["equity"] == "y3"
    assert traces["rsi"] == traces["oversold 20"] == traces["overbought 70"] == "y2"
    from matplotlib import image

    for name in ("donchian", "rsi"):
        assert image.imread(tmp_path / f"{name}.png").shape[1] > 800


def test_from_and_to_keep_only_updates_in_range(tmp_path: Path) -> None:
    bot = demo_bot_for_alt(order_type="taker", mode="long")
    updates = klines(bot)
    from_ms, to_ms = updates[500].time_ms, updates[2000].time_ms
    out_ms, out_iso = tmp_path / "ms.json", tmp_path / "iso.json"
    flags = ["--order-type", "taker", "--mode", "long", "--quiet"]
    done = backtest(
        "--klines", KLINES, *SYMBOL, *flags, "--from", from_ms, "--to", to_ms, "--json", out_ms
    )
    assert done.returncode == 0, done.stderr
    document = orjson.loads(out_ms.read_bytes())
    kept = [u for u in updates if from_ms <= u.time_ms < to_ms]
    assert len(kept) == 1500
    assert document["trades"] == core_trades(bot, kept)
    assert document["trades"] and all(t["position_side"] == "long" for t in document["trades"])
    assert document["status"]["startTime"] == from_ms
    assert document["symbols"][0]["price"] == kept[-1].price
    # the same range as ISO date-times (UTC)
    iso = [f"--from={_iso(from_ms)}", f"--to={_iso(to_ms)}"]
    done = backtest("--klines", KLINES, *SYMBOL, *flags, *iso, "--json", out_iso)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(out_iso.read_bytes()) == document


def _iso(time_ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def test_a_trades_file_is_aggregated_into_klines(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    flags = ["--symbol", "XRP-ETH", "--price-decimals", "8", "--min-size", "0.1"]
    done = backtest("--trades", TRADES, *flags, "--json", out, "--quiet")
    assert done.returncode == 0, done.stderr
    bot = BotConfig.model_validate(
        {
            "id": "demo",
            "symbols": [
                {"product_id": "XRP-ETH", "min_size": "0.1", "price_decimals": 8, "leverage": 10}
            ],
        }
    )
    updates = [u for _, u in read_market_file(TRADES, bot.period_ms)]
    document = orjson.loads(out.read_bytes())
    assert document["trades"] == core_trades(bot, updates) != []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--nbdev-up", "-1"], "config error: --nbdev-up: -1: "),
        (["--mode", "sideways"], "config error: --mode: sideways: "),
        (["--from", "someday"], "config error: --from: someday: "),
        (["--from", "2030-01-01"], "config error: --from/--to: 2030-01-01..: "),
        (["--plot", "out.svg"], "config error: --plot: out.svg: "),
        (["--sweep", "colour=red"], "config error: --sweep: colour=red: "),
        (["--sweep", "period=20,1"], "config error: --period: 1: "),
    ],
)
def test_a_bad_option_value_exits_78_with_one_line_naming_it(args: list[str], line: str) -> None:
    done = backtest("--klines", KLINES, *SYMBOL, *args)
    assert done.returncode == 78, done.stderr
    assert done.stderr.startswith(line) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_without_symbol_the_price_decimals_are_read_off_the_file(tmp_path: Path) -> None:
    """Issue 14: the file used to trade under the demo ETH-USDT's 2 decimals, every price "0.00"."""
    out = tmp_path / "out.json"
    done = backtest("--klines", KLINES, "--json", out)
    assert done.returncode == 0, done.stderr
    document = orjson.loads(out.read_bytes())
    # the demo's first symbol, with the 8 decimals of prices such as 0.00162008 (row 1)
    bot = BotConfig.model_validate(
        {
            "id": "demo",
            "symbols": [{"product_id": "ETH-USDT", "min_size": "0.00001", "price_decimals": 8}],
        }
    )
    assert document["trades"] == core_trades(bot, klines(bot)) != []
    assert all(re.fullmatch(r"0\.\d{8}", t["price"]) for t in document["trades"])
    assert all(float(t["price"]) > 0 for t in document["trades"])
    # the first fill: a maker buy timed out, filled as a taker at the close 0.00158285 of the
    # next update plus 0.05 % slippage = 0.0015836414..., with margin 1000 * 20 / 100 = 200 at
    # leverage 10: floor(200 * 10 / 0.0015836414 / 0.00001) = 126291215197 steps
    first = document["trades"][0]
    assert (first["price"], first["size"], first["order_type"]) == (
        "0.00158364",
        "1262912.15197",
        "taker",
    )
    notes = [
        f"ETH-USDT: price_decimals 8, the most decimals among the prices of {KLINES}"
        " (--price-decimals sets it)",
        "ETH-USDT: min_size 0.00001, the demo's ETH-USDT step: a market file does not show its"
        " market's (--min-size sets it)",
    ]
    assert document["notes"] == notes
    for note in notes:
        assert f"note: {note}" in done.stdout


def test_a_trades_file_without_symbol_takes_the_decimals_of_its_price_column(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.json"
    done = backtest("--trades", TRADES, "--min-size", "0.1", "--json", out, "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    document = orjson.loads(out.read_bytes())
    bot = BotConfig.model_validate(
        {
            "id": "demo",
            "symbols": [{"product_id": "ETH-USDT", "min_size": "0.1", "price_decimals": 8}],
        }
    )
    updates = [u for _, u in read_market_file(TRADES, bot.period_ms)]
    assert document["trades"] == core_trades(bot, updates) != []
    # the amounts (whole numbers) do not count; --min-size given: no note on it
    assert document["notes"] == [
        f"ETH-USDT: price_decimals 8, the most decimals among the prices of {TRADES}"
        " (--price-decimals sets it)"
    ]


def test_given_price_decimals_are_kept_without_a_note(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    flags = ["--symbol", "ALT-BTC", "--price-decimals", "6", "--min-size", "0.01"]
    done = backtest("--klines", KLINES, *flags, "--json", out)
    assert done.returncode == 0, done.stderr
    document = orjson.loads(out.read_bytes())
    assert document["trades"] and document["notes"] == []
    assert all(re.fullmatch(r"0\.\d{6}", t["price"]) for t in document["trades"])
    assert "note:" not in done.stdout


def test_a_config_silent_on_terms_trades_with_spec_s_defaults_like_a_live_replay(
    tmp_path: Path,
) -> None:
    """SPEC 4.1 rule 10: min_size "0.00001" and price_decimals 2 when the bots file leaves them
    out, as a live replay or synthetic source gives them; a flag still sets a term."""
    config = tmp_path / "bots.yaml"
    config.write_text("bots:\n  - id: live\n    symbols:\n      - {product_id: ALT-BTC}\n")
    out = tmp_path / "out.json"
    done = backtest(
        "--config", config, "--klines", KLINES, "--price-decimals", "8", "--json", out, "--quiet"
    )
    assert done.returncode == 0, done.stderr
    document = orjson.loads(out.read_bytes())
    assert document["notes"] == [
        "ALT-BTC: min_size SPEC's default (min_size 0.00001, price_decimals 2): the bots file"
        " leaves them out (--min-size, --price-decimals set them)"
    ]
    expected = BotConfig.model_validate(
        {
            "id": "live",
            "symbols": [{"product_id": "ALT-BTC", "min_size": "0.00001", "price_decimals": 8}],
        }
    )
    assert document["trades"] == core_trades(expected, klines(expected))
    assert all(re.fullmatch(r"\d+\.\d{5}", t["size"]) for t in document["trades"])


def test_a_config_silent_on_price_decimals_gets_2_and_refuses_to_write_a_price_as_zero(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bots.yaml"
    config.write_text(
        'bots:\n  - id: live\n    symbols:\n      - {product_id: ALT-BTC, min_size: "0.01"}\n'
    )
    done = backtest("--config", config, "--klines", KLINES, "--json", tmp_path / "out.json")
    assert done.returncode == 78, done.stdout
    assert done.stderr.startswith("config error: --price-decimals: 2: ALT-BTC's fill at ")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        # the demo's own ETH-USDT and BTC-USDT terms: 2 and 1 decimals
        (["--symbol", "ETH-USDT"], "2: ETH-USDT's fill at {} would be written as 0.00"),
        (["--symbol", "BTC-USDT"], "1: BTC-USDT's fill at {} would be written as 0.0"),
        (
            ["--symbol", "ALT-BTC", "--price-decimals", "2", "--min-size", "0.01"],
            "2: ALT-BTC's fill at {} would be written as 0.00",
        ),
    ],
)
def test_a_fill_its_price_decimals_would_write_as_zero_exits_78_naming_the_flag(
    flags: list[str], shown: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    done = backtest("--klines", KLINES, *flags, "--json", out)
    assert done.returncode == 78, done.stderr
    # the first fill, order_id 1, at 0.00158285 * 1.0005 (a taker buy) = 0.0015836414249999998
    fill = "0.0015836414249999998 (order_id 1)"
    assert done.stderr == (
        f"config error: --price-decimals: {shown.format(fill)};"
        f" the prices of {KLINES} have up to 8 decimals\n"
    )
    assert done.stdout == "" and not out.exists()


def test_a_trades_file_given_as_klines_is_refused() -> None:
    done = backtest("--klines", TRADES)
    assert done.returncode == 78
    assert "is a trades file: give it with --trades" in done.stderr


def test_the_sweep_ranks_every_combination_by_total_pnl(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    grid = ["period=14,20", "nbdev=2,2.5"]
    done = backtest("--klines", KLINES, *SYMBOL, "--sweep", *grid, "--json", out, "--workers", 2)
    assert done.returncode == 0, done.stderr
    rows = orjson.loads(out.read_bytes())
    assert len(rows) == 4 and [row["rank"] for row in rows] == [1, 2, 3, 4]
    pnls = [row["total_pnl"] for row in rows]
    assert pnls == sorted(pnls, reverse=True)
    assert {tuple(row["parameters"].values()) for row in rows} == {
        ("14", "2"),
        ("14", "2.5"),
        ("20", "2"),
        ("20", "2.5"),
    }
    # each row is the single run of its parameters
    single = tmp_path / "single.json"
    assert backtest("--klines", KLINES, *SYMBOL, "--json", single, "--quiet").returncode == 0
    status = orjson.loads(single.read_bytes())["status"]
    default = next(row for row in rows if row["parameters"] == {"period": "20", "nbdev": "2"})
    assert default["total_pnl"] == status["usdtProfit"] + status["dynamicUsdtProfit"]
    assert default["fill_count"] == status["tradeNum"]
    # the table, best first
    assert "Sweep: 4 runs, ranked by total PnL" in done.stdout
    table_rows = [line.split() for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[1], r[2]) for r in table_rows] == [
        (row["parameters"]["period"], row["parameters"]["nbdev"]) for row in rows
    ]
