// Everything written into the page. Data only ever goes through textContent and attributes:
// no HTML is ever parsed from data.

import { fillCause, fillKind, strategyOf, SymbolChart } from "./chart.js";
import {
  compact, dateTime, fixed, percent, priceDecimals, quoteDecimals, signed, significant,
  timeZoneName,
} from "./format.js";

const $ = (selector, root = document) => root.querySelector(selector);

/** Write a figure: the text shown, the raw value in data-value (JSON), a sign class. */
function show(element, text, raw, tone = null) {
  if (!element) return;
  element.textContent = text;
  element.dataset.value = JSON.stringify(raw ?? null);
  element.classList.toggle("up", tone === "up");
  element.classList.toggle("down", tone === "down");
}

const tone = (value) => (value > 0 ? "up" : value < 0 ? "down" : null);

/** The open position from the newest fill: an opening fill leaves it open (SPEC 3). */
export function positionOf(trades) {
  const last = trades[trades.length - 1];
  if (!last || !fillKind(last).startsWith("open")) return null;
  return { side: last.position_side, size: last.size, price: last.price };
}

export class DashboardView {
  constructor(chartLib) {
    this.chartLib = chartLib; // null when the chart library is unavailable
    this.cards = new Map(); // product_id -> { root, chart, decimals }
    this.sort = { key: "time", descending: true };
    this.trades = []; // rows of the trade table, unsorted
    for (const button of document.querySelectorAll("#trades th button")) {
      button.addEventListener("click", () => this.sortBy(button.dataset.sort));
    }
  }

  /** After a full init: rebuild every card and the table. */
  renderAll(state) {
    for (const card of this.cards.values()) {
      if (card.chart) card.chart.remove();
      card.root.remove();
    }
    this.cards.clear();
    for (const productId of state.order) {
      this.cards.set(productId, this.buildCard(productId));
      const card = this.cards.get(productId);
      const klines = state.klinesOf(productId);
      const trades = state.tradesOf(productId);
      this.updateDecimals(card, trades, klines);
      if (card.chart) {
        card.chart.setKlines(klines);
        card.chart.setTrades(trades, klines.length ? klines[klines.length - 1].size : "1m");
      }
      this.renderSymbol(state, productId);
    }
    this.renderStatus(state);
    this.collectTrades(state);
  }

  /** After an applied refresh: scalars and status, the changed klines, new fills. */
  renderRefresh(state, changes) {
    if (state.order.some((id) => !this.cards.has(id)) || this.cards.size !== state.order.length) {
      this.renderAll(state);
      return;
    }
    for (const productId of state.order) {
      const card = this.cards.get(productId);
      const klines = changes.klines.get(productId);
      const trades = changes.trades.get(productId);
      if (klines || trades) {
        this.updateDecimals(card, state.tradesOf(productId), state.klinesOf(productId));
      }
      if (card.chart && klines) card.chart.updateKlines(klines, state.klinesOf(productId));
      if (card.chart && trades) {
        const all = state.klinesOf(productId);
        card.chart.setTrades(state.tradesOf(productId), all.length ? all[all.length - 1].size : "1m");
      }
      this.renderSymbol(state, productId);
    }
    this.renderStatus(state);
    if (changes.trades.size) this.collectTrades(state);
  }

  buildCard(productId) {
    const root = $("#symbol-template").content.firstElementChild.cloneNode(true);
    root.dataset.product = productId;
    $(".product", root).textContent = productId;
    $(".chart", root).setAttribute("aria-label", `${productId} candles`);
    $("#symbols").append(root);
    let chart = null;
    if (this.chartLib) {
      try {
        chart = new SymbolChart(this.chartLib, $(".chart", root), 2, compact);
      } catch (error) {
        console.error("chart", productId, error);
      }
    }
    if (!chart) $(".chart", root).hidden = true;
    return { root, chart, decimals: 2 };
  }

  updateDecimals(card, trades, klines) {
    card.decimals = priceDecimals(trades, klines, card.decimals);
    if (card.chart) card.chart.setDecimals(card.decimals);
  }

  renderSymbol(state, productId) {
    const card = this.cards.get(productId);
    const symbol = state.symbols.get(productId).scalars;
    const root = card.root;
    const digits = card.decimals;
    const quote = quoteDecimals(digits);
    const field = (name) => root.querySelector(`[data-field="${name}"]`);
    show(field("price"), `${fixed(symbol.price, digits)} ${symbol.currency}`, symbol.price);
    show(field("signal"), symbol.signal ?? "no signal", symbol.signal);
    field("signal").dataset.signal = symbol.signal ?? "none";
    const position = positionOf(state.tradesOf(productId));
    show(
      field("position"),
      position ? `${position.side} ${position.size} ${symbol.asset} @ ${position.price}` : "flat",
      position,
      position ? (position.side === "long" ? "up" : "down") : null,
    );
    show(field("assetCaptial"), fixed(symbol.assetCaptial, quote), symbol.assetCaptial);
    show(
      field("usdtProfit"),
      `${signed(symbol.usdtProfit, quote)} (${percent(symbol.profit)})`,
      symbol.usdtProfit,
      tone(symbol.usdtProfit),
    );
    show(
      field("dynamicUsdtProfit"),
      `${signed(symbol.dynamicUsdtProfit, quote)} (${percent(symbol.dynamicProfit)})`,
      symbol.dynamicUsdtProfit,
      tone(symbol.dynamicUsdtProfit),
    );
    show(
      field("winLost"),
      `${symbol.win} / ${symbol.lost} (${percent(symbol.winLostRate, false)})`,
      [symbol.win, symbol.lost],
    );
    show(field("leverage"), `${symbol.leverage}x ${symbol.isolated ? "isolated" : "cross"}`,
      symbol.leverage);
    this.renderStrategy(card, state.klinesOf(productId));
    if (card.chart) root.dataset.markers = String(card.chart.markerCount());
  }

  /**
   * The strategy of the newest kline (SPEC 3.2 rule 4): its display name beside the symbol, its
   * indicator values under the chart, and what the chart draws where in the legend.
   */
  renderStrategy(card, klines) {
    const root = card.root;
    const newest = klines[klines.length - 1];
    const strategy = strategyOf(newest);
    const name = root.querySelector('[data-field="strategy"]');
    show(name, strategy ? strategy.name : "", strategy ? strategy.name : null);
    name.hidden = !strategy;
    const readout = $(".readout", root);
    const areas = card.chart ? card.chart.placesByArea() : null;
    const overCandles = new Set(areas ? areas.price : []);
    readout.replaceChildren();
    for (const indicator of strategy ? strategy.indicators : []) {
      const value = newest.strategy[indicator];
      const item = document.createElement("span");
      item.dataset.indicator = indicator;
      item.dataset.value = JSON.stringify(value ?? null);
      item.textContent = `${indicator} ${
        overCandles.has(indicator) ? fixed(value, card.decimals) : significant(value, 4)
      }`;
      readout.append(item);
    }
    readout.hidden = !readout.childElementCount;
    const legend = $(".legend-indicators", root);
    const parts = [];
    if (areas && areas.price.length) parts.push(`Over the candles: ${areas.price.join(", ")}.`);
    if (areas && areas.pane.length) parts.push(`Below: ${areas.pane.join(", ")}.`);
    legend.textContent = parts.join(" ");
    const chart = $(".chart", root);
    const label = `${root.dataset.product} candles${strategy ? ` with ${strategy.name}` : ""}`;
    if (chart.getAttribute("aria-label") !== label) chart.setAttribute("aria-label", label);
  }

  /** Quote amounts of the bot: the widest quote decimals of its symbols. */
  statusDecimals() {
    let digits = 2;
    for (const card of this.cards.values()) digits = Math.max(digits, quoteDecimals(card.decimals));
    return digits;
  }

  renderStatus(state) {
    const status = state.status;
    const digits = this.statusDecimals();
    const field = (name) => document.querySelector(`#status [data-field="${name}"]`);
    $("#bot-exchange").textContent = `${status.exchange ?? ""} on ${state.exchange?.name ?? "?"}`;
    show(field("status"), status.status === "work" ? "trading" : "stopped", status.status);
    field("status").dataset.status = status.status;
    for (const name of ["currentCapital", "totalCapital", "startCapital"]) {
      show(field(name), fixed(status[name], digits), status[name]);
    }
    for (const name of ["usdtProfit", "dynamicUsdtProfit"]) {
      show(field(name), signed(status[name], digits), status[name], tone(status[name]));
    }
    for (const name of ["profit", "dynamicProfit"]) {
      show(field(name), percent(status[name]), status[name], tone(status[name]));
    }
    show(field("winLost"), `${status.win} / ${status.lost}`, [status.win, status.lost]);
    show(field("winLostRate"), percent(status.winLostRate, false), status.winLostRate);
    show(field("tradeNum"), String(status.tradeNum), status.tradeNum);
    show(field("startTime"), `${dateTime(status.startTime)} (${timeZoneName()})`, status.startTime);
    document.body.dataset.seq = String(state.seq);
    $("#seq").textContent = String(state.seq);
  }

  collectTrades(state) {
    this.trades = [];
    for (const productId of state.order) {
      const digits = quoteDecimals(this.cards.get(productId)?.decimals ?? 2);
      for (const trade of state.symbols.get(productId).trades.values()) {
        this.trades.push({ trade, productId, digits, kind: fillKind(trade) });
      }
    }
    $("#trade-count").textContent = `(${this.trades.length})`;
    this.renderTrades();
  }

  sortBy(key) {
    this.sort = {
      key,
      descending: this.sort.key === key ? !this.sort.descending : key === "time",
    };
    this.renderTrades();
  }

  renderTrades() {
    const { key, descending } = this.sort;
    const value = (row) => {
      if (key === "product_id") return row.productId;
      if (key === "kind") return row.kind;
      if (key === "price" || key === "size") return Number(row.trade[key]);
      return row.trade[key];
    };
    const rows = [...this.trades].sort((a, b) => {
      const x = value(a);
      const y = value(b);
      const order = x < y ? -1 : x > y ? 1 : a.trade.order_id - b.trade.order_id;
      return descending ? -order : order;
    });
    for (const button of document.querySelectorAll("#trades th button")) {
      const active = button.dataset.sort === key;
      button.parentElement.setAttribute(
        "aria-sort", active ? (descending ? "descending" : "ascending") : "none",
      );
    }
    const body = $("#trades tbody");
    const fragment = document.createDocumentFragment();
    for (const row of rows) fragment.append(tradeRow(row));
    body.replaceChildren(fragment);
  }
}

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function tradeRow({ trade, productId, digits, kind }) {
  const tr = document.createElement("tr");
  tr.dataset.orderId = String(trade.order_id);
  tr.dataset.product = productId;
  tr.dataset.kind = kind.replaceAll(" ", "-");
  tr.dataset.cause = fillCause(trade);
  const fill = `${trade.type} (${kind})`;
  tr.append(
    cell(dateTime(trade.time)),
    cell(productId),
    cell(fill, trade.type === "buy" ? "up" : "down"),
    cell(trade.order_type),
    cell(trade.price, "num"),
    cell(trade.size, "num"),
    cell(fixed(trade.fee, digits + 2), "num"),
    cell(signed(trade.usdtProfit, digits), `num ${tone(trade.usdtProfit) ?? ""}`.trim()),
  );
  return tr;
}
