// One symbol's chart: candles, the three Bollinger bands of each kline's `strategy`, and a marker
// per fill, drawn by TradingView's lightweight-charts (the `lib` module passed in).

import { periodMs } from "./format.js";

const UP = "#26a69a";
const DOWN = "#ef5350";
const LIQUIDATION = "#ff9800";
const BANDS = [
  ["upper", "#7e57c2"],
  ["middle", "#90a4ae"],
  ["lower", "#7e57c2"],
];

const seconds = (ms) => Math.floor(ms / 1000);

/** What a fill was: opening or closing a long or a short, or a liquidation. */
export function fillKind(trade) {
  const action = String(trade.action || "");
  if (action.startsWith("liquidation")) return `liquidation ${trade.position_side}`;
  const opens = (trade.type === "buy") === (trade.position_side === "long");
  return `${opens ? "open" : "close"} ${trade.position_side}`;
}

/** A marker for one fill: above the bar for sells, below for buys; arrow taker, circle maker. */
export function fillMarker(trade, period) {
  const buy = trade.type === "buy";
  const liquidation = String(trade.action || "").startsWith("liquidation");
  const opens = buy === (trade.position_side === "long");
  const side = trade.position_side === "long" ? "L" : "S";
  let shape = buy ? "arrowUp" : "arrowDown";
  if (liquidation) shape = "square";
  else if (trade.order_type === "maker") shape = "circle";
  return {
    time: seconds(Math.floor(trade.time / period) * period),
    position: buy ? "belowBar" : "aboveBar",
    color: liquidation ? LIQUIDATION : buy ? UP : DOWN,
    shape,
    text: liquidation ? `LIQ ${side}` : `${side}${opens ? "+" : "−"}`,
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

function bandPoint(kline, name) {
  const value = kline.strategy ? kline.strategy[name] : null;
  return typeof value === "number" ? { time: seconds(kline.time), value } : { time: seconds(kline.time) };
}

/** Axis labels in the viewer's time zone: a date where the day changes, else the time. */
function tickLabel(time, tickMarkType) {
  const date = new Date(time * 1000);
  if (tickMarkType < 3) return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export class SymbolChart {
  constructor(lib, element, decimals) {
    this.lib = lib;
    this.element = element;
    this.chart = lib.createChart(element, {
      autoSize: true,
      layout: { background: { color: "transparent" }, textColor: "#c9d1d9" },
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
    this.bands = new Map();
    for (const [name, color] of BANDS) {
      const series = this.chart.addSeries(lib.LineSeries, {
        color,
        lineWidth: 1,
        lineStyle: name === "middle" ? lib.LineStyle.Dashed : lib.LineStyle.Solid,
        priceLineVisible: false,
        lastValueVisible: false,
        crosshairMarkerVisible: false,
      });
      this.bands.set(name, series);
    }
    this.markers = lib.createSeriesMarkers(this.candles, []);
    this.lastTime = null;
    this.firstTime = null;
    this.bars = 0;
    this.trades = null;
    this.size = "1m";
    this.setDecimals(decimals);
  }

  setDecimals(decimals) {
    if (decimals === this.decimals) return;
    this.decimals = decimals;
    const priceFormat = { type: "price", precision: decimals, minMove: 10 ** -decimals };
    this.candles.applyOptions({ priceFormat });
    for (const series of this.bands.values()) series.applyOptions({ priceFormat });
  }

  /** All klines, ascending by time. */
  setKlines(klines) {
    this.candles.setData(klines.map(candle));
    for (const [name, series] of this.bands) series.setData(klines.map((k) => bandPoint(k, name)));
    this.firstTime = klines.length ? seconds(klines[0].time) : null;
    this.lastTime = klines.length ? seconds(klines[klines.length - 1].time) : null;
    this.bars = klines.length;
    if (this.trades) this.setTrades(this.trades, this.size); // markers only on bars still here
  }

  /** Changed klines of a refresh (ascending): the forming candle moves, a new one starts. */
  updateKlines(changed, allKlines) {
    if (this.lastTime !== null && seconds(changed[0].time) < this.lastTime) {
      this.setKlines(allKlines); // an older kline changed: redraw everything
      return;
    }
    for (const kline of changed) {
      this.candles.update(candle(kline));
      for (const [name, series] of this.bands) series.update(bandPoint(kline, name));
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

  remove() {
    this.chart.remove();
  }
}
