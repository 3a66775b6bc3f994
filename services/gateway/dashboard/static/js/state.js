// The bot's state as a client keeps it (SPEC 2.1 rules 8 and 12): an `init` snapshot, then each
// refresh folded in: scalars and status replaced, klines upserted by period_id and trades by
// order_id, the newest kept.

const DEFAULT_KLINES = 300; // kline_history's default
const DEFAULT_TRADES = 500; // trade_history's default

/** Whether a refresh fits (rule 8): "apply", "ignore" (seq <= last) or "resync" (init again). */
export function classify(state, message) {
  if (state.epoch === null || message.epoch !== state.epoch) return "resync";
  if (message.seq === state.seq + 1) return "apply";
  return message.seq <= state.seq ? "ignore" : "resync";
}

export class BotState {
  constructor() {
    this.epoch = null;
    this.seq = 0;
    this.exchange = null;
    this.status = {};
    this.symbols = new Map(); // product_id -> symbol (scalars + klines Map + trades Map)
    this.order = []; // product ids in config order
    this.klineLimit = DEFAULT_KLINES;
    this.tradeLimit = DEFAULT_TRADES;
  }

  /** A full `init`: everything replaced. */
  applyInit(message) {
    this.epoch = message.epoch;
    this.seq = message.seq;
    this.exchange = message.exchange;
    this.status = { ...message.status };
    this.symbols = new Map();
    this.order = [];
    let klines = 0;
    let trades = 0;
    for (const symbol of message.symbols) {
      klines = Math.max(klines, symbol.klines.length);
      trades = Math.max(trades, symbol.trades.length);
      this.order.push(symbol.product_id);
      this.symbols.set(symbol.product_id, fresh(symbol));
    }
    // An init holds at most kline_history / trade_history; keep at least that many.
    this.klineLimit = Math.max(DEFAULT_KLINES, klines);
    this.tradeLimit = Math.max(DEFAULT_TRADES, trades);
  }

  /** Refresh seq+1 of the same epoch (the caller checked `classify`). Returns what changed. */
  applyRefresh(message) {
    const changes = { klines: new Map(), trades: new Map() };
    this.seq = message.seq;
    Object.assign(this.status, message.data.status);
    const order = [];
    for (const incoming of message.data.symbols) {
      order.push(incoming.product_id);
      let symbol = this.symbols.get(incoming.product_id);
      if (!symbol) {
        symbol = fresh({ ...incoming, klines: [], trades: [] });
        this.symbols.set(incoming.product_id, symbol);
      }
      for (const [name, value] of Object.entries(incoming)) {
        if (name !== "klines" && name !== "trades") symbol.scalars[name] = value;
      }
      for (const kline of incoming.klines) symbol.klines.set(kline.period_id, kline);
      for (const trade of incoming.trades) symbol.trades.set(trade.order_id, trade);
      trim(symbol.klines, this.klineLimit, (k) => k.time, (k) => k.period_id);
      trim(symbol.trades, this.tradeLimit, (t) => t.order_id, (t) => t.order_id);
      if (incoming.klines.length) changes.klines.set(incoming.product_id, incoming.klines);
      if (incoming.trades.length) changes.trades.set(incoming.product_id, incoming.trades);
    }
    for (const productId of [...this.symbols.keys()]) {
      if (!order.includes(productId)) this.symbols.delete(productId);
    }
    this.order = order;
    return changes;
  }

  klinesOf(productId) {
    return sortedValues(this.symbols.get(productId).klines, (k) => k.time);
  }

  tradesOf(productId) {
    return sortedValues(this.symbols.get(productId).trades, (t) => t.order_id);
  }
}

function fresh(symbol) {
  const scalars = {};
  for (const [name, value] of Object.entries(symbol)) {
    if (name !== "klines" && name !== "trades") scalars[name] = value;
  }
  return {
    scalars,
    klines: new Map(symbol.klines.map((k) => [k.period_id, k])),
    trades: new Map(symbol.trades.map((t) => [t.order_id, t])),
  };
}

function sortedValues(map, key) {
  return [...map.values()].sort((a, b) => key(a) - key(b));
}

/** Keep the `limit` newest entries of a Map (newest: the greatest `order`). */
function trim(map, limit, order, id) {
  if (map.size <= limit) return;
  for (const item of sortedValues(map, order).slice(0, map.size - limit)) map.delete(id(item));
}
