"""The backtest's picture: for each symbol, its price with the strategy's price-scale indicators
and the fills on it, a pane below it with the strategy's other indicators, and the bot's equity at
the bottom, all on one time axis. `.html` is drawn with plotly (one self-contained file,
zoomable), `.png` with matplotlib's Agg backend (no display needed).

Where a strategy's indicator goes (SPEC 3.2; the first rule that applies wins):

1. `pb` and `pw` (Bollinger's %b and bandwidth, ratios of bands already drawn) are not drawn;
2. `upper`, `middle` and `lower` go over the price;
3. `rsi`, `macd`, `macdsignal` and `macdhist` (the built-ins' oscillators) go in the pane;
4. any other indicator goes over the price when its value lies within 0.5x to 2x the kline's
   close on at least 90 % of the klines where it has a value, in the pane otherwise; one that
   never has a value is not drawn.

In the pane, an indicator whose name ends in `hist` (MACD's `macdhist`) is drawn as bars, the
others as lines; a strategy with `oversold` and `overbought` parameters, or an `rsi` indicator,
gets dashed guides at those levels (30 and 70 unless the parameters say otherwise).

Fills are told apart by what they do: opening a long, closing it, opening a short, closing it,
the risk exits of SPEC 3.3 (stop loss, trailing stop, take profit) and liquidations (SPEC 3.1
rule 10), each with its own marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import numpy as np

from libs.config import BotConfig
from libs.core.sim_exchange import Fill
from libs.errors import ConfigError
from libs.trading import load_strategy_with_parameters
from tools.backtest.engine import BacktestResult, KlineSeries, equity_curve
from tools.backtest.report import parameter_texts, risk_exits_on

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_SUFFIXES = (".html", ".png")
MAX_PLOTTED_KLINES = 20_000  # per symbol: beyond this every n-th kline is drawn; fills all are


@dataclass(frozen=True, slots=True)
class MarkerKind:
    label: str
    plotly_symbol: str
    matplotlib_marker: str
    color: str
    hollow: bool = False


OPEN_LONG = MarkerKind("buy: open long", "triangle-up", "^", "#2ca02c")
CLOSE_LONG = MarkerKind("sell: close long", "triangle-down-open", "v", "#2ca02c", hollow=True)
OPEN_SHORT = MarkerKind("sell: open short", "triangle-down", "v", "#d62728")
CLOSE_SHORT = MarkerKind("buy: close short", "triangle-up-open", "^", "#d62728", hollow=True)
STOP_LOSS = MarkerKind("stop loss exit", "square", "s", "#ff7f0e")
TRAILING_STOP = MarkerKind("trailing stop exit", "diamond", "D", "#8c564b")
TAKE_PROFIT = MarkerKind("take profit exit", "star", "*", "#17becf")
LIQUIDATION = MarkerKind("liquidation", "x", "X", "#000000")
MARKER_KINDS = (
    OPEN_LONG,
    CLOSE_LONG,
    OPEN_SHORT,
    CLOSE_SHORT,
    STOP_LOSS,
    TRAILING_STOP,
    TAKE_PROFIT,
    LIQUIDATION,
)
EXIT_KINDS = {"stopLoss": STOP_LOSS, "trailingStop": TRAILING_STOP, "takeProfit": TAKE_PROFIT}

# Where indicators go: the module docstring's rules.
NOT_DRAWN = frozenset({"pb", "pw"})
PRICE_NAMES = frozenset({"upper", "middle", "lower"})
PANE_NAMES = frozenset({"rsi", "macd", "macdsignal", "macdhist"})
PRICE_RANGE = (0.5, 2.0)  # an indicator's value over the kline's close
PRICE_SHARE = 0.9  # of the klines where the indicator has a value
BAR_SUFFIX = "hist"
DEFAULT_GUIDES = (30.0, 70.0)  # RSI's oversold and overbought (SPEC 3.2 rule 6)
Placement = Literal["price", "pane"]

BAND_COLOR = "#1f77b4"
CLOSE_COLOR = "#444444"
EQUITY_COLOR = "#9467bd"
GUIDE_COLOR = "#7f7f7f"
LINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
BAR_UP, BAR_DOWN = "#2ca02c", "#d62728"


def marker_kind(fill: Fill) -> MarkerKind:
    """A fill's marker, read off its TRADE action (SPEC 3.2 rule 3, 3.3 rule 3) and position."""
    prefix = fill.action.partition("_")[0]
    if prefix == "liquidation":
        return LIQUIDATION
    if prefix in EXIT_KINDS:
        return EXIT_KINDS[prefix]
    opening = fill.round_trip is None
    if fill.position_side == "long":
        return OPEN_LONG if opening else CLOSE_LONG
    return OPEN_SHORT if opening else CLOSE_SHORT


def placement(
    name: str, values: Sequence[float | None], close: Sequence[float]
) -> Placement | None:
    """Where indicator `name` is drawn: over the price, in the pane below it, or not at all."""
    if name in NOT_DRAWN:
        return None
    if name in PRICE_NAMES:
        return "price"
    if name in PANE_NAMES:
        return "pane"
    value = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    defined = ~np.isnan(value)
    if not defined.any():
        return None
    ratio = value[defined] / np.asarray(close, dtype=np.float64)[defined]
    within = (ratio >= PRICE_RANGE[0]) & (ratio <= PRICE_RANGE[1])
    return "price" if within.mean() >= PRICE_SHARE else "pane"


def guides(bot: BotConfig, indicators: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """The pane's horizontal guides: the strategy's oversold and overbought levels, if it has
    them as parameters, else 30 and 70 for an `rsi` indicator; none otherwise."""
    parameters = bot.strategy.parameters
    low, high = parameters.get("oversold"), parameters.get("overbought")
    if _is_number(low) and _is_number(high):
        low, high = float(low), float(high)
    elif "rsi" in indicators:
        low, high = DEFAULT_GUIDES
    else:
        return ()
    return (("oversold", low), ("overbought", high))


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_plot_path(path: Path) -> None:
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError("--plot", str(path), "must end in .html (plotly) or .png (matplotlib)")


def _moments(times_ms: Sequence[int]) -> list[datetime]:
    return [datetime.fromtimestamp(time_ms / 1000, UTC) for time_ms in times_ms]


@dataclass(frozen=True, slots=True)
class _Fills:
    times: list[datetime] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Panel:
    product_id: str
    times: list[datetime]
    close: list[float]
    price: dict[str, list[float | None]]  # indicators over the price, in declared order
    pane: dict[str, list[float | None]]  # indicators in the pane below, in declared order
    guides: tuple[tuple[str, float], ...]  # of the pane; none without a pane
    fills: dict[MarkerKind, _Fills]


@dataclass(frozen=True, slots=True)
class _Picture:
    title: str
    panels: list[_Panel]
    equity_times: list[datetime]
    equity: list[float]


def _panel(
    product_id: str,
    series: KlineSeries,
    fills: Sequence[Fill],
    indicators: Sequence[str],
    bot: BotConfig,
) -> _Panel:
    stride = max(1, -(-len(series.time_ms) // MAX_PLOTTED_KLINES))
    markers: dict[MarkerKind, _Fills] = {}
    for fill in fills:
        drawn = markers.setdefault(marker_kind(fill), _Fills())
        drawn.times.append(datetime.fromtimestamp(fill.time_ms / 1000, UTC))
        drawn.prices.append(fill.price)
        drawn.actions.append(fill.action)
    price: dict[str, list[float | None]] = {}
    pane: dict[str, list[float | None]] = {}
    for name in indicators:
        values = series.indicators.get(name) or [None] * len(series.time_ms)
        where = placement(name, values, series.close)
        if where is not None:
            (price if where == "price" else pane)[name] = values[::stride]
    return _Panel(
        product_id=product_id,
        times=_moments(series.time_ms[::stride]),
        close=series.close[::stride],
        price=price,
        pane=pane,
        guides=guides(bot, indicators) if pane else (),
        fills=markers,
    )


def plot_title(result: BacktestResult) -> str:
    """The bot, the strategy's display name and parameters, its shared ones and risk exits."""
    bot = result.bot
    config = bot.strategy
    if result.symbols:
        display_name = result.symbols[0].strategy.params.strategy.name
    else:
        display_name = config.name
    try:  # a plug-in's parameters with its defaults filled in, as frozen (libs.trading)
        parameters = load_strategy_with_parameters(bot)[1]
    except ConfigError:
        parameters = config.parameters
    own = ", ".join(parameter_texts(parameters))
    shared = [config.mode, config.order_type] + [
        f"{label} {value:g} %" for label, value in risk_exits_on(config)
    ]
    strategy = f"{display_name} ({own})" if own else display_name
    return f"Backtest of bot {bot.id}: {strategy}, {', '.join(shared)}"


def _picture(result: BacktestResult) -> _Picture:
    panels = [
        _panel(
            run.product_id,
            run.series,
            run.fills,
            run.strategy.params.strategy.indicators,
            result.bot,
        )
        for run in result.symbols
        if run.series.time_ms
    ]
    times_ms, equity = equity_curve(result)
    stride = max(1, -(-len(times_ms) // MAX_PLOTTED_KLINES))
    return _Picture(
        title=plot_title(result),
        panels=panels,
        equity_times=_moments(times_ms[::stride]),
        equity=equity[::stride],
    )


def _rows(panels: Sequence[_Panel]) -> list[tuple[str, float]]:
    """Each row's subplot title and height, top to bottom: per symbol its price and, if it has
    one, its pane; the equity last."""
    rows: list[tuple[str, float]] = []
    for panel in panels:
        rows.append((panel.product_id, 3.0))
        if panel.pane:
            rows.append((f"{panel.product_id}: {', '.join(panel.pane)}", 1.3))
    rows.append(("equity", 1.5))
    return rows


def _line_colors(names: Sequence[str]) -> dict[str, str]:
    return {name: LINE_COLORS[n % len(LINE_COLORS)] for n, name in enumerate(names)}


def _is_band(panel: _Panel) -> bool:
    return "upper" in panel.price and "lower" in panel.price


def write_plot(result: BacktestResult, path: Path) -> None:
    """Draw to `path`; its suffix picks the library."""
    check_plot_path(path)
    if path.suffix.lower() == ".html":
        plotly_figure(result).write_html(str(path), include_plotlyjs=True, full_html=True)
        return
    from matplotlib import pyplot

    figure = matplotlib_figure(result)
    try:
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)


# --- plotly --------------------------------------------------------------------------------------


def plotly_figure(result: BacktestResult) -> Any:
    """The plotly figure of `result`: one subplot row per `_rows`, the x axis shared."""
    from plotly import graph_objects as go  # type: ignore[import-untyped]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    picture = _picture(result)
    rows = _rows(picture.panels)
    figure = make_subplots(
        rows=len(rows),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=min(0.07, 0.3 / len(rows)),
        row_heights=[height for _, height in rows],
        subplot_titles=[title for title, _ in rows],
    )
    in_legend: set[str] = set()

    def add(trace: Any, row: int) -> None:
        """Each name once in the legend, grouped so that a click hides it on every symbol."""
        name = trace.name
        trace.update(legendgroup=name, showlegend=name not in in_legend)
        in_legend.add(name)
        figure.add_trace(trace, row=row, col=1)

    row = 1
    for panel in picture.panels:
        colors = _line_colors([name for name in panel.price if name not in PRICE_NAMES])
        band = {"width": 1, "color": "rgba(31,119,180,0.6)"}
        for name, values in panel.price.items():
            if name in ("upper", "lower") and _is_band(panel):
                continue  # drawn as one band below
            if name == "middle":
                line = {"width": 1, "dash": "dot", "color": BAND_COLOR}
            else:
                line = {"width": 1, "color": colors.get(name, BAND_COLOR)}
            add(go.Scatter(x=panel.times, y=values, name=name, line=line), row)
        if _is_band(panel):
            add(go.Scatter(x=panel.times, y=panel.price["upper"], name="upper", line=band), row)
            lower = go.Scatter(
                x=panel.times,
                y=panel.price["lower"],
                name="lower",
                line=band,
                fill="tonexty",
                fillcolor="rgba(31,119,180,0.08)",
            )
            add(lower, row)
        close_line = {"width": 1.2, "color": CLOSE_COLOR}
        add(go.Scatter(x=panel.times, y=panel.close, name="close", line=close_line), row)
        for kind in MARKER_KINDS:
            if kind not in panel.fills:
                continue
            drawn = panel.fills[kind]
            marker = {"symbol": kind.plotly_symbol, "size": 10, "color": kind.color}
            if kind in EXIT_KINDS.values():
                marker["line"] = {"width": 1, "color": "#000000"}
            scatter = go.Scatter(
                x=drawn.times,
                y=drawn.prices,
                mode="markers",
                name=kind.label,
                text=drawn.actions,
                hovertemplate="%{text} at %{y}",
                marker=marker,
            )
            add(scatter, row)
        row += 1
        if not panel.pane:
            continue
        colors = _line_colors([name for name in panel.pane if not name.endswith(BAR_SUFFIX)])
        for name, values in panel.pane.items():
            if name.endswith(BAR_SUFFIX):
                bar_colors = [BAR_DOWN if v is not None and v < 0 else BAR_UP for v in values]
                bars = go.Bar(x=panel.times, y=values, name=name, marker_color=bar_colors)
                bars.update(marker_line_width=0, opacity=0.6)
                add(bars, row)
            else:
                line = {"width": 1.2, "color": colors[name]}
                add(go.Scatter(x=panel.times, y=values, name=name, line=line), row)
        ends = [panel.times[0], panel.times[-1]]
        for label, level in panel.guides:
            guide = go.Scatter(
                x=ends,
                y=[level, level],
                name=f"{label} {level:g}",
                mode="lines",
                line={"width": 1, "dash": "dash", "color": GUIDE_COLOR},
                hoverinfo="skip",
            )
            add(guide, row)
        row += 1
    equity_line = {"width": 1.5, "color": EQUITY_COLOR}
    add(
        go.Scatter(x=picture.equity_times, y=picture.equity, name="equity", line=equity_line),
        row,
    )
    figure.update_layout(
        title=picture.title,
        height=int(sum(120 * height for _, height in rows)) + 140,
        hovermode="x unified",
        bargap=0,
    )
    return figure


# --- matplotlib ----------------------------------------------------------------------------------


def matplotlib_figure(result: BacktestResult) -> Figure:
    """The matplotlib figure of `result` (Agg), one axis per `_rows`, the x axis shared. The
    caller closes it (`pyplot.close`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    picture = _picture(result)
    rows = _rows(picture.panels)
    figure, axes = pyplot.subplots(
        len(rows),
        1,
        sharex=True,
        squeeze=False,
        figsize=(14, sum(1.05 * height for _, height in rows) + 1),
        gridspec_kw={"height_ratios": [height for _, height in rows]},
    )
    try:
        for axis, (title, _) in zip(axes[:, 0], rows, strict=True):
            axis.set_title(title, loc="left")
            axis.grid(alpha=0.3)
        row = 0
        for panel in picture.panels:
            _matplotlib_price(axes[row, 0], panel)
            row += 1
            if panel.pane:
                _matplotlib_pane(axes[row, 0], panel)
                row += 1
        equity_axis = axes[row, 0]
        equity_axis.plot(
            picture.equity_times, picture.equity, color=EQUITY_COLOR, linewidth=1.2, label="equity"
        )
        figure.suptitle(picture.title)
        figure.tight_layout()
    except BaseException:
        pyplot.close(figure)
        raise
    return figure


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _matplotlib_price(axis: Any, panel: _Panel) -> None:
    colors = _line_colors([name for name in panel.price if name not in PRICE_NAMES])
    if _is_band(panel):
        lower, upper = _nan(panel.price["lower"]), _nan(panel.price["upper"])
        axis.fill_between(panel.times, lower, upper, color=BAND_COLOR, alpha=0.1)
    for name, values in panel.price.items():
        if name in PRICE_NAMES:
            style = ":" if name == "middle" else "-"
            color = BAND_COLOR
        else:
            style, color = "-", colors[name]
        axis.plot(
            panel.times, _nan(values), color=color, linewidth=0.8, linestyle=style, label=name
        )
    axis.plot(panel.times, panel.close, color=CLOSE_COLOR, linewidth=0.9, label="close")
    for kind in MARKER_KINDS:
        if kind not in panel.fills:
            continue
        drawn = panel.fills[kind]
        exit_kind = kind in EXIT_KINDS.values()
        axis.scatter(
            drawn.times,
            drawn.prices,
            marker=kind.matplotlib_marker,
            s=70 if kind is TAKE_PROFIT else 40,
            label=kind.label,
            facecolors="none" if kind.hollow else kind.color,
            edgecolors="#000000" if exit_kind else kind.color,
            linewidths=0.6 if exit_kind else 1.0,
            zorder=4 if exit_kind else 3,
        )
    axis.legend(loc="upper left", fontsize="small", ncol=6)


def _matplotlib_pane(axis: Any, panel: _Panel) -> None:
    colors = _line_colors([name for name in panel.pane if not name.endswith(BAR_SUFFIX)])
    for name, values in panel.pane.items():
        if name.endswith(BAR_SUFFIX):
            # Bars as two stepped areas (above and below zero), each kline a step of its own
            # width: one artist each, where a bar per kline would take seconds to draw.
            heights = np.array(_nan(values))
            up = np.where(heights > 0, heights, 0.0)
            down = np.where(heights < 0, heights, 0.0)
            style = {"step": "mid", "alpha": 0.6, "linewidth": 0}
            axis.fill_between(panel.times, 0.0, up, color=BAR_UP, label=name, **style)
            axis.fill_between(panel.times, 0.0, down, color=BAR_DOWN, **style)
        else:
            axis.plot(panel.times, _nan(values), color=colors[name], linewidth=0.9, label=name)
    for label, level in panel.guides:
        axis.axhline(
            level, color=GUIDE_COLOR, linewidth=0.8, linestyle="--", label=f"{label} {level:g}"
        )
    axis.legend(loc="upper left", fontsize="small", ncol=5)
