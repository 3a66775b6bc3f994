// One symbol's chart: candles, the indicators of the bot's strategy as each kline's `strategy`
// object carries them (SPEC 3.2 rule 4), and a marker per fill, drawn by TradingView's
// lightweight-charts (the `lib` module passed in). Indicators of price magnitude are lines over the
// candles; the others are drawn in a second pane below them, on the same time scale.

import { periodMs } from "./format.js";

const UP = "#26a69a";
const DOWN = "#ef5350";
const LIQUIDATION = "#ff9800";
const EXIT = "#fdd835";
const GUIDE = "#8b949e";
const BAND = "#7e57c2";
const HISTOGRAM_UP = "rgba(38, 166, 154, 0.6)";
const HISTOGRAM_DOWN = "rgba(239, 83, 80, 0.6)";
// Lines of indicators that have no colour of their own, by their place in the declared order.
const PALETTE = ["#42a5f5", "#ffb74d", "#ab47bc", "#26c6da", "#ec407a", "#9ccc65"];
const PANE = 1; // the indicator pane's index; 0 holds the candles
const PANE_SHARE = 0.3; // of the chart's height, when there is an indicator pane

/** The risk exits of SPEC 3.3, by the first part of their fills' action (`stopLoss_sell_long`). */
export const EXITS = {
  stopLoss: { label: "SL", name: "stop loss" },
  trailingStop: { label: "TS", name: "trailing stop" },
  takeProfit: { label: "TP", name: "take profit" },
};

/**
 * How the built-in strategies' indicators are drawn (SPEC 3.2 rules 4, 6 and 7), by name:
 * `place` is "price" (a line over the candles), "line" or "histogram" (in the pane below) or
 * "hidden" (Bollinger's `pb` and `pw` are ratios of the bands: they show in the readout under the
 * chart, not as lines). Any other indicator, a plug-in's, is placed by `placeOf`.
 */
const KNOWN = {
  upper: { place: "price", color: BAND },
  middle: { place: "price", color: "#90a4ae", dashed: true },
  lower: { place: "price", color: BAND },
  pb: { place: "hidden" },
  pw: { place: "hidden" },
  rsi: { place: "line", color: "#42a5f5", range: [0, 100], guides: [30, 70], precision: 1 },
  macd: { place: "line", color: "#42a5f5" },
  macdsignal: { place: "line", color: "#ff9800" },
  macdhist: { place: "histogram" },
};

const COUNTERS = ["_buyCrossCount", "_sellCrossCount", "_buy", "_sell"];

const seconds = (ms) => Math.floor(ms / 1000);

/**
 * The strategy of a kline, from its `strategy` object: the display name is what precedes
 * `_buyCrossCount`; the indicators are the other fields, in the order the strategy declares them
 * (JSON object order, kept by JavaScript for names that are not integers, which indicator names
 * never are). Null when the kline carries no strategy.
 */
export function strategyOf(kline) {
  const fields = kline && kline.strategy ? Object.keys(kline.strategy) : [];
  const counter = fields.find((name) => name.endsWith(COUNTERS[0]));
  if (counter === undefined) return null;
  const name = counter.slice(0, -COUNTERS[0].length);
  const own = new Set(COUNTERS.map((suffix) => name + suffix));
  return { name, indicators: fields.filter((field) => !own.has(field)) };
}

const PRICE_LOW = 0.5;
const PRICE_HIGH = 2;
const PRICE_SHARE = 0.8;

/**
 * Where an indicator the dashboard does not know (a plug-in's) is drawn. One named `upper`,
 * `middle` or `lower` is a band over the candles (KNOWN). Otherwise it is of price magnitude, and
 * drawn over the candles, when its value lies within 0.5x to 2x the kline's close on at least 80 %
 * of the klines where it has a value; else it goes to the pane below, as a histogram when its
 * name ends in "hist" (like MACD's), as a line otherwise. With no value yet it is "pending": the
 * chart places it once a kline brings one.
 */
export function placeOf(name, klines) {
  let valued = 0;
  let near = 0;
  for (const kline of klines) {
    const value = kline.strategy ? kline.strategy[name] : null;
    if (typeof value !== "number" || !(kline.close > 0)) continue;
    valued += 1;
    if (value >= PRICE_LOW * kline.close && value <= PRICE_HIGH * kline.close) near += 1;
  }
  if (!valued) return "pending";
  if (near >= PRICE_SHARE * valued) return "price";
  return /hist$/i.test(name) ? "histogram" : "line";
}

/** Each indicator of the newest kline's strategy with its drawing (see KNOWN and placeOf). */
export function indicatorLayout(klines) {
  const strategy = klines.length ? strategyOf(klines[klines.length - 1]) : null;
  const indicators = new Map();
  if (!strategy) return { strategy, indicators };
  strategy.indicators.forEach((name, index) => {
    const known = Object.hasOwn(KNOWN, name) ? KNOWN[name] : null;
    const style = known ?? { place: placeOf(name, klines), color: PALETTE[index % PALETTE.length] };
    indicators.set(name, style);
  });
  return { strategy, indicators };
}

/**
 * Why a fill happened (TRADE `action`, SPEC 2 and 3.3 rule 3): "liquidation", a risk exit
 * ("stopLoss", "trailingStop", "takeProfit": its first part, then the side and position), or
 * "strategy" (`<display name>_<buy|sell>_<long|short>`).
 */
export function fillCause(trade) {
  const [head, ...rest] = String(trade.action || "").split("_");
  if (head === "liquidation") return "liquidation";
  if (Object.hasOwn(EXITS, head) && rest.length === 2) return head;
  return "strategy";
}

/** What a fill was: opening or closing a long or a short, a liquidation, or a risk exit. */
export function fillKind(trade) {
  const cause = fillCause(trade);
  if (cause === "liquidation") return `liquidation ${trade.position_side}`;
  if (cause !== "strategy") return `${EXITS[cause].name} ${trade.position_side}`;
  const opens = (trade.type === "buy") === (trade.position_side === "long");
  return `${opens ? "open" : "close"} ${trade.position_side}`;
}

/**
 * A marker for one fill: above the bar for sells, below for buys. A strategy fill is an arrow
 * (taker) or a circle (maker), green or red, labelled L+/L−/S+/S−; a close forced by a rule is a
 * square: yellow SL, TS or TP for a risk exit, orange LIQ for a liquidation.
 */
export function fillMarker(trade, period) {
  const buy = trade.type === "buy";
  const cause = fillCause(trade);
  const forced = cause !== "strategy";
  const opens = buy === (trade.position_side === "long");
  const side = trade.position_side === "long" ? "L" : "S";
  let shape = buy ? "arrowUp" : "arrowDown";
  if (forced) shape = "square";
  else if (trade.order_type === "maker") shape = "circle";
  let color = buy ? UP : DOWN;
  let text = `${side}${opens ? "+" : "−"}`;
  if (cause === "liquidation") {
    color = LIQUIDATION;
    text = `LIQ ${side}`;
  } else if (forced) {
    color = EXIT;
    text = `${EXITS[cause].label} ${side}`;
  }
  return {
    time: seconds(Math.floor(trade.time / period) * period),
    position: buy ? "belowBar" : "aboveBar",
    color,
    shape,
    text,
    id: String(trade.order_id),
  };
}

function candle(kline) {
  return {
    time: seconds(kline.time),
    open: kline.open,
    high: kline.high,
    low: kline.low,
    close: kline.close,
  };
}

function indicatorPoint(kline, name, place) {
  const value = kline.strategy ? kline.strategy[name] : null;
  const time = seconds(kline.time);
  if (typeof value !== "number") return { time }; // a gap (whitespace) until the value exists
  if (place !== "histogram") return { time, value };
  return { time, value, color: value >= 0 ? HISTOGRAM_UP : HISTOGRAM_DOWN };
}

/** Axis labels in the viewer's time zone: a date where the day changes, else the time. */
function tickLabel(time, tickMarkType) {
  const date = new Date(time * 1000);
  if (tickMarkType < 3) return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/**
 * The pane's labels: values of any magnitude (MACD of a coin priced in BTC is ~1e-6). The
 * library maps tick values through the formatter as `array.map` does (value, index, array):
 * only the value is passed on.
 */
const paneFormat = (format) => ({
  type: "custom",
  formatter: (value) => format(value),
  minMove: 1e-12,
});

export class SymbolChart {
  constructor(lib, element, decimals, formatIndicator) {
    this.lib = lib;
    this.element = element;
    this.formatIndicator = formatIndicator; // (value) -> text, for the pane's axis
    this.chart = lib.createChart(element, {
      autoSize: true,
      layout: {
        background: { color: "transparent" },
        textColor: "#c9d1d9",
        panes: { separatorColor: "#30363d", separatorHoverColor: "#30363d" },
        // The logo would add an inline <style>, which the page's policy refuses (style-src
        // 'self'), and a link carrying this page's host and path to tradingview.com; the
        // footer gives TradingView's attribution notice and link instead.
        attributionLogo: false,
      },
      grid: { vertLines: { color: "#21262d" }, horzLines: { color: "#21262d" } },
      rightPriceScale: { borderColor: "#30363d" },
      timeScale: {
        borderColor: "#30363d",
        timeVisible: true,
        secondsVisible: false,
        tickMarkFormatter: tickLabel,
      },
      localization: { timeFormatter: (time) => new Date(time * 1000).toLocaleString() },
    });
    this.candles = this.chart.addSeries(lib.CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.strategy = null; // { name, indicators } of the newest kline
    this.indicators = new Map(); // name -> { place, style, series (null: not drawn) }
    this.layoutKey = null;
    this.markers = lib.createSeriesMarkers(this.candles, []);
    this.lastTime = null;
    this.firstTime = null;
    this.bars = 0;
    this.trades = null;
    this.size = "1m";
    this.decimals = null;
    this.setDecimals(decimals);
  }

  priceFormat() {
    return { type: "price", precision: this.decimals, minMove: 10 ** -this.decimals };
  }

  setDecimals(decimals) {
    if (decimals === this.decimals) return;
    this.decimals = decimals;
    const priceFormat = this.priceFormat();
    this.candles.applyOptions({ priceFormat });
    for (const { place, series } of this.indicators.values()) {
      if (series && place === "price") series.applyOptions({ priceFormat });
    }
  }

  /** Series for the strategy's indicators, made again only when the layout changes. */
  layOut(klines) {
    const { strategy, indicators } = indicatorLayout(klines);
    const key = JSON.stringify([strategy, [...indicators].map(([name, s]) => [name, s.place])]);
    if (key === this.layoutKey) return;
    for (const { series } of this.indicators.values()) {
      if (series) this.chart.removeSeries(series);
    }
    this.layoutKey = key;
    this.strategy = strategy;
    this.indicators = new Map();
    for (const [name, style] of indicators) {
      const series = this.addIndicator(name, style);
      this.indicators.set(name, { place: style.place, style, series });
    }
    const panes = this.chart.panes();
    if (panes.length > PANE) {
      panes[0].setStretchFactor(1 - PANE_SHARE);
      panes[PANE].setStretchFactor(PANE_SHARE);
    }
    this.element.dataset.panes = String(panes.length); // the CSS gives a pane room
  }

  addIndicator(name, style) {
    const lib = this.lib;
    const common = { priceLineVisible: false, lastValueVisible: false };
    if (style.place === "price") {
      return this.chart.addSeries(lib.LineSeries, {
        ...common,
        color: style.color,
        lineWidth: 1,
        lineStyle: style.dashed ? lib.LineStyle.Dashed : lib.LineStyle.Solid,
        crosshairMarkerVisible: false,
        priceFormat: this.priceFormat(),
      });
    }
    if (style.place !== "line" && style.place !== "histogram") return null; // hidden, pending
    const priceFormat =
      style.precision === undefined
        ? paneFormat(this.formatIndicator)
        : { type: "price", precision: style.precision, minMove: 10 ** -style.precision };
    const options = { ...common, title: name, priceFormat };
    if (style.range) {
      const [minValue, maxValue] = style.range;
      options.autoscaleInfoProvider = () => ({ priceRange: { minValue, maxValue } });
    }
    const series =
      style.place === "histogram"
        ? this.chart.addSeries(lib.HistogramSeries, { ...options, base: 0 }, PANE)
        : this.chart.addSeries(lib.LineSeries, { ...options, color: style.color, lineWidth: 1 },
          PANE);
    series.priceScale().applyOptions({ scaleMargins: { top: 0.1, bottom: 0.05 } });
    for (const price of style.guides ?? []) {
      series.createPriceLine({
        price,
        color: GUIDE,
        lineWidth: 1,
        lineStyle: lib.LineStyle.Dashed,
        axisLabelVisible: false,
      });
    }
    return series;
  }

  /** A changed kline the current layout cannot draw: another strategy, or a first value. */
  needsLayout(kline) {
    const strategy = strategyOf(kline);
    if (JSON.stringify(strategy) !== JSON.stringify(this.strategy)) return true;
    for (const [name, { place }] of this.indicators) {
      if (place === "pending" && typeof kline.strategy[name] === "number") return true;
    }
    return false;
  }

  /** All klines, ascending by time. */
  setKlines(klines) {
    this.candles.setData(klines.map(candle));
    this.layOut(klines);
    for (const [name, { place, series }] of this.indicators) {
      if (series) series.setData(klines.map((k) => indicatorPoint(k, name, place)));
    }
    this.firstTime = klines.length ? seconds(klines[0].time) : null;
    this.lastTime = klines.length ? seconds(klines[klines.length - 1].time) : null;
    this.bars = klines.length;
    if (this.trades) this.setTrades(this.trades, this.size); // markers only on bars still here
  }

  /** Changed klines of a refresh (ascending): the forming candle moves, a new one starts. */
  updateKlines(changed, allKlines) {
    if (
      (this.lastTime !== null && seconds(changed[0].time) < this.lastTime) ||
      changed.some((kline) => this.needsLayout(kline))
    ) {
      this.setKlines(allKlines); // an older kline changed, or the layout: redraw everything
      return;
    }
    for (const kline of changed) {
      this.candles.update(candle(kline));
      for (const [name, { place, series }] of this.indicators) {
        if (series) series.update(indicatorPoint(kline, name, place));
      }
      if (this.lastTime === null || seconds(kline.time) > this.lastTime) this.bars += 1;
      this.lastTime = seconds(kline.time);
      if (this.firstTime === null) this.firstTime = this.lastTime;
    }
    // The state keeps the newest klines only; so does the chart, now and then.
    if (this.bars > 2 * Math.max(allKlines.length, 100)) this.setKlines(allKlines);
  }

  /** One marker per fill on a candle still on the chart. */
  setTrades(trades, size) {
    this.trades = trades;
    this.size = size;
    const period = periodMs(size);
    const shown = trades
      .map((trade) => fillMarker(trade, period))
      .filter((marker) => this.firstTime !== null && marker.time >= this.firstTime)
      .sort((a, b) => a.time - b.time);
    this.markers.setMarkers(shown);
  }

  markerCount() {
    return this.markers.markers().length;
  }

  /** Indicator names by where they are drawn: "price", "pane" (line or histogram), "hidden". */
  placesByArea() {
    const areas = { price: [], pane: [], hidden: [] };
    for (const [name, { place }] of this.indicators) {
      if (place === "price") areas.price.push(name);
      else if (place === "line" || place === "histogram") areas.pane.push(name);
      else areas.hidden.push(name);
    }
    return areas;
  }

  /**
   * What the chart draws, for the browser test and curious users (the console): per indicator,
   * its place, pane, series type and number of points (a kline whose value is null has none).
   */
  describe() {
    const indicators = {};
    for (const [name, { place, series }] of this.indicators) {
      indicators[name] = {
        place,
        pane: series ? series.getPane().paneIndex() : null,
        type: series ? series.seriesType() : null,
        points: series ? series.data().filter((point) => "value" in point).length : 0,
      };
    }
    return {
      strategy: this.strategy ? this.strategy.name : null,
      order: this.strategy ? this.strategy.indicators : [],
      candles: this.candles.data().length,
      panes: this.chart.panes().length,
      indicators,
      markers: this.markers.markers(),
    };
  }

  remove() {
    this.chart.remove();
  }
}
