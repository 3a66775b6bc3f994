"""The backtest's picture: each symbol's price with its three bands and the fills on it, and the
bot's equity below. `.html` is drawn with plotly (one self-contained file, zoomable), `.png`
with matplotlib's Agg backend (no display needed).

Fills are told apart by what they do: opening a long, closing it, opening a short, closing it,
and liquidations (SPEC 3.1 rule 10), each with its own marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from libs.core.sim_exchange import Fill
from libs.errors import ConfigError
from tools.backtest.engine import BacktestResult, KlineSeries, equity_curve

PLOT_SUFFIXES = (".html", ".png")
MAX_PLOTTED_KLINES = 20_000  # per symbol: beyond this every n-th kline is drawn; fills all are


@dataclass(frozen=True, slots=True)
class MarkerKind:
    label: str
    plotly_symbol: str
    matplotlib_marker: str
    color: str


OPEN_LONG = MarkerKind("buy: open long", "triangle-up", "^", "#2ca02c")
CLOSE_LONG = MarkerKind("sell: close long", "triangle-down-open", "v", "#2ca02c")
OPEN_SHORT = MarkerKind("sell: open short", "triangle-down", "v", "#d62728")
CLOSE_SHORT = MarkerKind("buy: close short", "triangle-up-open", "^", "#d62728")
LIQUIDATION = MarkerKind("liquidation", "x", "X", "#000000")
MARKER_KINDS = (OPEN_LONG, CLOSE_LONG, OPEN_SHORT, CLOSE_SHORT, LIQUIDATION)


def marker_kind(fill: Fill) -> MarkerKind:
    if fill.action.startswith("liquidation_"):
        return LIQUIDATION
    opening = fill.round_trip is None
    if fill.position_side == "long":
        return OPEN_LONG if opening else CLOSE_LONG
    return OPEN_SHORT if opening else CLOSE_SHORT


def check_plot_path(path: Path) -> None:
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError("--plot", str(path), "must end in .html (plotly) or .png (matplotlib)")


def _moments(times_ms: Sequence[int]) -> list[datetime]:
    return [datetime.fromtimestamp(time_ms / 1000, UTC) for time_ms in times_ms]


@dataclass(frozen=True, slots=True)
class _Panel:
    product_id: str
    times: list[datetime]
    close: list[float]
    middle: list[float | None]
    upper: list[float | None]
    lower: list[float | None]
    fills: dict[MarkerKind, tuple[list[datetime], list[float]]]


def _panel(product_id: str, series: KlineSeries, fills: Sequence[Fill]) -> _Panel:
    stride = max(1, -(-len(series.time_ms) // MAX_PLOTTED_KLINES))
    markers: dict[MarkerKind, tuple[list[datetime], list[float]]] = {}
    for fill in fills:
        times, prices = markers.setdefault(marker_kind(fill), ([], []))
        times.append(datetime.fromtimestamp(fill.time_ms / 1000, UTC))
        prices.append(fill.price)
    return _Panel(
        product_id=product_id,
        times=_moments(series.time_ms[::stride]),
        close=series.close[::stride],
        middle=_indicator(series, "middle")[::stride],
        upper=_indicator(series, "upper")[::stride],
        lower=_indicator(series, "lower")[::stride],
        fills=markers,
    )


def _indicator(series: KlineSeries, name: str) -> list[float | None]:
    return series.indicators.get(name) or [None] * len(series.time_ms)


def write_plot(result: BacktestResult, path: Path) -> None:
    """Draw to `path`; its suffix picks the library."""
    check_plot_path(path)
    panels = [
        _panel(run.product_id, run.series, run.fills)
        for run in result.symbols
        if run.series.time_ms
    ]
    times_ms, equity = equity_curve(result)
    stride = max(1, -(-len(times_ms) // MAX_PLOTTED_KLINES))
    equity_times = _moments(times_ms[::stride])
    equity = equity[::stride]
    title = f"Backtest of bot {result.bot.id}: {result.bot.strategy.name}"
    if path.suffix.lower() == ".html":
        _plotly(panels, equity_times, equity, title, path)
    else:
        _matplotlib(panels, equity_times, equity, title, path)


def _plotly(
    panels: list[_Panel],
    equity_times: list[datetime],
    equity: list[float],
    title: str,
    path: Path,
) -> None:
    from plotly import graph_objects as go  # type: ignore[import-untyped]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    rows = len(panels) + 1
    figure = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=[3.0] * len(panels) + [1.5],
        subplot_titles=[panel.product_id for panel in panels] + ["equity"],
    )
    for row, panel in enumerate(panels, start=1):
        first = row == 1
        band = {"width": 1, "color": "rgba(31,119,180,0.6)"}
        figure.add_trace(
            go.Scatter(x=panel.times, y=panel.upper, name="upper", line=band, showlegend=first),
            row=row,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=panel.times,
                y=panel.lower,
                name="lower",
                line=band,
                fill="tonexty",
                fillcolor="rgba(31,119,180,0.08)",
                showlegend=first,
            ),
            row=row,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=panel.times,
                y=panel.middle,
                name="middle",
                line={"width": 1, "dash": "dot", "color": "#1f77b4"},
                showlegend=first,
            ),
            row=row,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=panel.times,
                y=panel.close,
                name="close",
                line={"width": 1.2, "color": "#444444"},
                showlegend=first,
            ),
            row=row,
            col=1,
        )
        for kind in MARKER_KINDS:
            if kind not in panel.fills:
                continue
            times, prices = panel.fills[kind]
            figure.add_trace(
                go.Scatter(
                    x=times,
                    y=prices,
                    mode="markers",
                    name=kind.label,
                    legendgroup=kind.label,
                    showlegend=first,
                    marker={"symbol": kind.plotly_symbol, "size": 10, "color": kind.color},
                ),
                row=row,
                col=1,
            )
    figure.add_trace(
        go.Scatter(
            x=equity_times, y=equity, name="equity", line={"width": 1.5, "color": "#9467bd"}
        ),
        row=rows,
        col=1,
    )
    figure.update_layout(title=title, height=320 * rows, hovermode="x unified")
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def _matplotlib(
    panels: list[_Panel],
    equity_times: list[datetime],
    equity: list[float],
    title: str,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = len(panels) + 1
    figure, axes = pyplot.subplots(
        rows,
        1,
        sharex=True,
        squeeze=False,
        figsize=(14, 3.2 * rows + 1),
        gridspec_kw={"height_ratios": [3.0] * len(panels) + [1.5]},
    )
    try:
        for axis, panel in zip(axes[:-1, 0], panels, strict=True):
            upper = [float("nan") if v is None else v for v in panel.upper]
            lower = [float("nan") if v is None else v for v in panel.lower]
            middle = [float("nan") if v is None else v for v in panel.middle]
            axis.fill_between(panel.times, lower, upper, color="#1f77b4", alpha=0.1)
            axis.plot(panel.times, upper, color="#1f77b4", linewidth=0.8, label="upper")
            axis.plot(panel.times, lower, color="#1f77b4", linewidth=0.8, label="lower")
            axis.plot(panel.times, middle, color="#1f77b4", linewidth=0.8, linestyle=":")
            axis.plot(panel.times, panel.close, color="#444444", linewidth=0.9, label="close")
            for kind in MARKER_KINDS:
                if kind in panel.fills:
                    times, prices = panel.fills[kind]
                    hollow = kind in (CLOSE_LONG, CLOSE_SHORT)
                    axis.scatter(
                        times,
                        prices,
                        marker=kind.matplotlib_marker,
                        s=40,
                        label=kind.label,
                        facecolors="none" if hollow else kind.color,
                        edgecolors=kind.color,
                        zorder=3,
                    )
            axis.set_title(panel.product_id, loc="left")
            axis.legend(loc="upper left", fontsize="small", ncol=4)
            axis.grid(alpha=0.3)
        equity_axis = axes[-1, 0]
        equity_axis.plot(equity_times, equity, color="#9467bd", linewidth=1.2)
        equity_axis.set_title("equity", loc="left")
        equity_axis.grid(alpha=0.3)
        figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
