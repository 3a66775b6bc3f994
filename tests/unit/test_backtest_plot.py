"""The backtest's plot (`tools.backtest.plot`) for every kind of strategy: what each figure draws,
read off the plotly figure's traces per subplot row and the matplotlib axes' artists by label.

Bollinger's bands and a plug-in's channel over the price, RSI with its guides and MACD's lines
and histogram in a pane below it, pb/pw nowhere, and risk exits with markers of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import pyplot
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection, PolyCollection

from libs.config import BotConfig
from libs.core.sim_exchange import Fill
from libs.exchange.market_files import read_market_file
from tools.backtest import plot
from tools.backtest.engine import BacktestResult, run_backtest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parents[2]
KLINES = ROOT / "tests" / "data" / "klines-1m-3000.csv"
PLUGINS = ROOT / "examples" / "strategies"
MACD_WITH_EXITS = {
    "name": "MACD",
    "order_type": "taker",
    "stop_loss_pct": 0.3,
    "take_profit_pct": 0.6,
    "trailing_stop_pct": 0.3,
}
EXIT_LABELS = {
    "stopLoss": "stop loss exit",
    "trailingStop": "trailing stop exit",
    "takeProfit": "take profit exit",
}
STRATEGY_FILL_LABELS = {
    kind.label for kind in (plot.OPEN_LONG, plot.CLOSE_LONG, plot.OPEN_SHORT, plot.CLOSE_SHORT)
}


def backtest(strategy: dict[str, Any], bot_id: str = "plotted") -> BacktestResult:
    bot = BotConfig.model_validate(
        {
            "id": bot_id,
            "start_capital": 1,
            "strategy": strategy,
            "symbols": [
                {"product_id": "ALT-BTC", "min_size": "0.01", "price_decimals": 8, "leverage": 3}
            ],
        }
    )
    updates = [update for _, update in read_market_file(KLINES, bot.period_ms)]
    return run_backtest(bot, {"ALT-BTC": updates}, time_zone_offset_min=0)


@pytest.fixture(scope="module")
def macd() -> BacktestResult:
    return backtest(MACD_WITH_EXITS)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))


# --- reading the figures -------------------------------------------------------------------------


def plotly_rows(result: BacktestResult) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """The figure, and each subplot row's title with its traces by name, top to bottom."""
    figure = plot.plotly_figure(result)
    titles = [annotation.text for annotation in figure.layout.annotations]
    rows = []
    for row, title in enumerate(titles, start=1):
        traces = {trace.name: trace for trace in figure.select_traces(row=row, col=1)}
        rows.append((title, traces))
    assert sum(len(traces) for _, traces in rows) == len(figure.data), "every trace has a row"
    return figure, rows


@pytest.fixture
def matplotlib_axes() -> Iterator[Any]:
    """Draws a result with matplotlib; yields (figure, [(title, axis), ...]); closes it."""
    figures = []

    def draw(result: BacktestResult) -> tuple[Any, list[tuple[str, Axes]]]:
        figure = plot.matplotlib_figure(result)
        figures.append(figure)
        return figure, [(axis.get_title(loc="left"), axis) for axis in figure.axes]

    yield draw
    for figure in figures:
        pyplot.close(figure)


def line_labels(axis: Axes) -> list[str]:
    return [str(line.get_label()) for line in axis.get_lines()]


def marker_labels(axis: Axes) -> set[str]:
    return {str(c.get_label()) for c in axis.collections if isinstance(c, PathCollection)}


def values(result: BacktestResult, name: str) -> list[float | None]:
    return result.symbols[0].series.indicators[name]


def defined(values: Any) -> list[float]:
    return [v for v in values if v is not None and not np.isnan(v)]


# --- the strategies ------------------------------------------------------------------------------


def test_bollinger_draws_its_bands_over_the_price_and_neither_pb_nor_pw(
    matplotlib_axes: Any,
) -> None:
    result = backtest({"name": "BollingerBands", "period": 20, "nbdev_up": 2, "nbdev_dn": 2})
    figure, rows = plotly_rows(result)
    assert [title for title, _ in rows] == ["ALT-BTC", "equity"]  # no pane
    price = rows[0][1]
    assert {"middle", "upper", "lower", "close"} <= set(price)
    assert "pb" not in price and "pw" not in price
    assert list(price["upper"].y) == values(result, "upper")
    assert price["lower"].fill == "tonexty"  # the band between upper and lower
    assert list(rows[1][1]) == ["equity"]
    assert figure.layout.title.text == (
        "Backtest of bot plotted: BollingerBands (period 20, nbdev_up 2, nbdev_dn 2), both, maker"
    )

    _, axes = matplotlib_axes(result)
    assert [title for title, _ in axes] == ["ALT-BTC", "equity"]
    labels = line_labels(axes[0][1])
    assert {"middle", "upper", "lower", "close"} <= set(labels)
    assert "pb" not in labels and "pw" not in labels
    assert any(isinstance(c, PolyCollection) for c in axes[0][1].collections)  # the band's fill


def test_rsi_draws_rsi_in_a_pane_with_the_configured_guides(matplotlib_axes: Any) -> None:
    result = backtest({"name": "RSI", "order_type": "taker", "oversold": 25, "overbought": 75})
    figure, rows = plotly_rows(result)
    assert [title for title, _ in rows] == ["ALT-BTC", "ALT-BTC: rsi", "equity"]
    price, pane = rows[0][1], rows[1][1]
    assert "rsi" not in price and {"close", "buy: open long", "sell: open short"} <= set(price)
    assert set(pane) == {"rsi", "oversold 25", "overbought 75"}
    assert list(pane["rsi"].y) == values(result, "rsi")
    assert 0 <= min(defined(pane["rsi"].y)) and max(defined(pane["rsi"].y)) <= 100
    assert set(pane["oversold 25"].y) == {25.0} and set(pane["overbought 75"].y) == {75.0}
    # the pane shares the price's time axis
    assert figure.layout.xaxis.matches == figure.layout.xaxis2.matches == "x3"
    assert "RSI (period 14, window 100, oversold 25, overbought 75), both, taker" in (
        figure.layout.title.text
    )

    mpl_figure, axes = matplotlib_axes(result)
    assert [title for title, _ in axes] == ["ALT-BTC", "ALT-BTC: rsi", "equity"]
    pane_axis = axes[1][1]
    assert line_labels(pane_axis) == ["rsi", "oversold 25", "overbought 75"]
    assert "rsi" not in line_labels(axes[0][1])
    guides = {line.get_label(): set(line.get_ydata()) for line in pane_axis.get_lines()[1:]}
    assert guides == {"oversold 25": {25}, "overbought 75": {75}}
    assert pane_axis.get_shared_x_axes().joined(pane_axis, axes[0][1])
    assert "RSI (period 14, window 100" in mpl_figure.texts[0].get_text()  # the suptitle


def test_rsi_guides_default_to_30_and_70() -> None:
    _, rows = plotly_rows(backtest({"name": "RSI"}))
    assert set(rows[1][1]) == {"rsi", "oversold 30", "overbought 70"}


def test_macd_draws_its_lines_and_histogram_in_a_pane(
    macd: BacktestResult, matplotlib_axes: Any
) -> None:
    figure, rows = plotly_rows(macd)
    assert [title for title, _ in rows] == [
        "ALT-BTC",
        "ALT-BTC: macd, macdsignal, macdhist",
        "equity",
    ]
    price, pane = rows[0][1], rows[1][1]
    assert set(pane) == {"macd", "macdsignal", "macdhist"}  # no guides
    assert pane["macd"].type == "scatter" and pane["macdsignal"].type == "scatter"
    assert pane["macdhist"].type == "bar"
    assert list(pane["macdhist"].y) == values(macd, "macdhist")
    assert not {"macd", "macdsignal", "macdhist"} & set(price)
    assert figure.layout.title.text == (
        "Backtest of bot plotted: MACD (fast 12, slow 26, signal 9, window 200), both, taker, "
        "stop loss 0.3 %, take profit 0.6 %, trailing stop 0.3 %"
    )

    _, axes = matplotlib_axes(macd)
    pane_axis = axes[1][1]
    assert line_labels(pane_axis) == ["macd", "macdsignal"]
    bars = [c for c in pane_axis.collections if isinstance(c, PolyCollection)]
    # the histogram: its part above zero (labelled) and below it, each a stepped area
    assert len(bars) == 2 and bars[0].get_label() == "macdhist"
    assert str(bars[1].get_label()).startswith("_")  # no second legend entry
    legend = [text.get_text() for text in pane_axis.get_legend().get_texts()]
    assert legend == ["macd", "macdsignal", "macdhist"]


def test_risk_exits_get_markers_of_their_own(macd: BacktestResult, matplotlib_axes: Any) -> None:
    fills = macd.symbols[0].fills
    by_exit = {
        label: [f for f in fills if f.action.startswith(f"{prefix}_")]
        for prefix, label in EXIT_LABELS.items()
    }
    assert all(by_exit.values()), "every kind of exit happens on this data"
    _, rows = plotly_rows(macd)
    price = rows[0][1]
    for label, exits in by_exit.items():
        trace = price[label]
        assert trace.mode == "markers" and trace.showlegend
        assert list(trace.y) == [f.price for f in exits]
        assert set(trace.text) == {f.action for f in exits}
    strategy_fills = [f for f in fills if f.action.startswith("MACD_")]
    assert sum(len(price[label].y) for label in STRATEGY_FILL_LABELS & set(price)) == len(
        strategy_fills
    )
    symbols = {
        name: trace.marker.symbol for name, trace in price.items() if trace.mode == "markers"
    }
    exit_symbols = {symbols[label] for label in EXIT_LABELS.values()}
    assert len(exit_symbols) == 3
    assert not exit_symbols & {symbols[label] for label in STRATEGY_FILL_LABELS & set(symbols)}
    assert plot.LIQUIDATION.plotly_symbol not in exit_symbols

    _, axes = matplotlib_axes(macd)
    price_axis = axes[0][1]
    assert set(EXIT_LABELS.values()) <= marker_labels(price_axis)
    legend = {text.get_text() for text in price_axis.get_legend().get_texts()}
    assert set(EXIT_LABELS.values()) <= legend
    markers = {kind.matplotlib_marker for kind in (plot.STOP_LOSS, plot.TRAILING_STOP)}
    markers |= {plot.TAKE_PROFIT.matplotlib_marker}
    others = {kind.matplotlib_marker for kind in plot.MARKER_KINDS} - markers
    assert len(markers) == 3 and not markers & others


@pytest.mark.usefixtures("plugins")
def test_a_plugins_channel_goes_over_the_price(matplotlib_axes: Any) -> None:
    result = backtest({"name": "donchian:DonchianBreakout", "order_type": "taker"})
    assert result.symbols[0].strategy.params.strategy.name == "Donchian"
    figure, rows = plotly_rows(result)
    assert [title for title, _ in rows] == ["ALT-BTC", "equity"]
    price = rows[0][1]
    assert {"upper", "lower", "close", "buy: open long", "sell: open short"} <= set(price)
    assert list(price["upper"].y) == values(result, "upper")
    # the display name, and the plug-in's parameters with its defaults filled in
    assert figure.layout.title.text == "Backtest of bot plotted: Donchian (period 20), both, taker"

    _, axes = matplotlib_axes(result)
    assert [title for title, _ in axes] == ["ALT-BTC", "equity"]
    assert {"upper", "lower", "close"} <= set(line_labels(axes[0][1]))


def test_both_files_are_written(macd: BacktestResult, tmp_path: Path) -> None:
    plot.write_plot(macd, tmp_path / "p.html")
    html = (tmp_path / "p.html").read_text()
    for name in ("macdhist", "macdsignal", "stop loss exit", "take profit exit", "equity"):
        assert f'"name":"{name}"' in html
    open_figures = pyplot.get_fignums()
    plot.write_plot(macd, tmp_path / "p.png")
    assert pyplot.get_fignums() == open_figures, "the figure is closed"
    from matplotlib import image

    height, width = image.imread(tmp_path / "p.png").shape[:2]
    assert width > 800 and height > 600


# --- the rules -----------------------------------------------------------------------------------


def test_placement_of_indicators() -> None:
    close = [50.0, 51.0, 49.0, 50.0]
    # by name first: ratios nowhere, bands over the price, built-in oscillators in the pane even
    # where their values would pass for prices (an RSI of 50 on a price of 50)
    assert plot.placement("pb", [0.5] * 4, close) is None
    assert plot.placement("pw", [0.1] * 4, close) is None
    assert plot.placement("middle", [None] * 4, close) == "price"
    assert plot.placement("rsi", [50.0] * 4, close) == "pane"
    assert plot.placement("macdhist", [50.0] * 4, close) == "pane"
    # any other name by its values: within 0.5x..2x the close on at least 90 % of klines with one
    assert plot.placement("ema", [None, 52.0, 48.0, 99.0], close) == "price"
    assert plot.placement("ema", [None, 52.0, 48.0, 101.0], close) == "pane"
    assert plot.placement("atr", [None, 1.2, 0.9, 1.1], close) == "pane"
    assert plot.placement("zscore", [None, -1.0, 2.0, 0.5], close) == "pane"
    assert plot.placement("ema", [None] * 4, close) is None  # nothing to draw
    many = [50.0] * 9 + [1.0]
    assert plot.placement("level", many, [50.0] * 10) == "price"  # 9 of 10


def fill(action: str, position_side: str, closing: bool) -> Fill:
    return Fill(
        order_id=1,
        time_ms=0,
        execution_time_ms=0,
        slippage_pct=0.0,
        side="buy",
        size="1",
        fee=0.0,
        price=1.0,
        order_type="taker",
        action=action,
        profit=0.0,
        usdt_profit=0.0,
        position_side=position_side,  # type: ignore[arg-type]
        round_trip=object() if closing else None,  # type: ignore[arg-type]
    )


def test_marker_kinds_follow_the_action() -> None:
    assert plot.marker_kind(fill("RSI_buy_long", "long", False)) is plot.OPEN_LONG
    assert plot.marker_kind(fill("RSI_sell_long", "long", True)) is plot.CLOSE_LONG
    assert plot.marker_kind(fill("Donchian_sell_short", "short", False)) is plot.OPEN_SHORT
    assert plot.marker_kind(fill("Donchian_buy_short", "short", True)) is plot.CLOSE_SHORT
    assert plot.marker_kind(fill("stopLoss_sell_long", "long", True)) is plot.STOP_LOSS
    assert plot.marker_kind(fill("trailingStop_buy_short", "short", True)) is plot.TRAILING_STOP
    assert plot.marker_kind(fill("takeProfit_sell_long", "long", True)) is plot.TAKE_PROFIT
    assert plot.marker_kind(fill("liquidation_sell_long", "long", True)) is plot.LIQUIDATION
    assert len({kind.label for kind in plot.MARKER_KINDS}) == len(plot.MARKER_KINDS)
