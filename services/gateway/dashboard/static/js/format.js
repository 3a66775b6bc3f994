// Number and time formatting. The Status API has no price_decimals field, so a symbol's price
// decimals are read from what it sends: fill prices are strings with exactly price_decimals
// (SPEC 2.1 rule 13); before any fill, the klines' prices show at most that many.

const MAX_DECIMALS = 12;

/** Digits after the point of a decimal string such as "0.00120" (trailing zeros count). */
export function stringDecimals(text) {
  const point = String(text).indexOf(".");
  return point < 0 ? 0 : String(text).length - point - 1;
}

/** Digits after the point of the shortest form of a number (1e-7 -> 7, 2345.5 -> 1). */
export function numberDecimals(value) {
  if (!Number.isFinite(value)) return 0;
  const [mantissa, exponent] = String(value).toLowerCase().split("e");
  const decimals = stringDecimals(mantissa) - Number(exponent || 0);
  return Math.min(MAX_DECIMALS, Math.max(0, decimals));
}

/** The price decimals of a symbol, from its newest fills, else its newest klines. */
export function priceDecimals(trades, klines, fallback = 2) {
  for (let i = trades.length - 1; i >= 0 && i >= trades.length - 5; i -= 1) {
    if (typeof trades[i].price === "string") return stringDecimals(trades[i].price);
  }
  let decimals = -1;
  for (const kline of klines.slice(-50)) {
    for (const value of [kline.open, kline.high, kline.low, kline.close]) {
      decimals = Math.max(decimals, numberDecimals(value));
    }
  }
  return decimals >= 0 ? decimals : fallback;
}

/** Amounts in the quote currency: the price decimals, at least 2. */
export function quoteDecimals(priceDigits) {
  return Math.max(2, priceDigits);
}

export function fixed(value, decimals) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "-";
  const text = value.toFixed(decimals);
  return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text;
}

/** A value of unknown magnitude to `digits` significant digits, never with an exponent:
 * 0.000001234567 -> "0.000001235", 54.321 -> "54.32", 12345.6 -> "12346". */
export function significant(value, digits = 4) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "-";
  if (value === 0) return "0";
  const magnitude = Math.floor(Math.log10(Math.abs(value)));
  return fixed(value, Math.min(MAX_DECIMALS, Math.max(0, digits - 1 - magnitude)));
}

/** `significant` without trailing zeros, for axis labels: 0.000002000 -> "0.000002". */
export function compact(value, digits = 4) {
  const text = significant(value, digits);
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

export function signed(value, decimals) {
  const text = fixed(value, decimals);
  return typeof value === "number" && value > 0 ? `+${text}` : text;
}

/** A ratio as a percentage: 0.0123 -> "+1.23 %". */
export function percent(ratio, withSign = true) {
  if (typeof ratio !== "number" || !Number.isFinite(ratio)) return "-";
  const value = ratio * 100;
  return `${withSign ? signed(value, 2) : fixed(value, 2)} %`;
}

/** Event time in ms as a date and time in the viewer's time zone. */
export function dateTime(ms) {
  if (!ms) return "-";
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function timeZoneName() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  } catch {
    return "local time";
  }
}

/** "1m" -> 60000, "4h" -> 14400000, "1d" -> 86400000 (SPEC 2.1 rule 14). */
export function periodMs(size) {
  const match = /^(\d*)([mhd])$/.exec(String(size));
  if (!match) return 60_000;
  const unit = { m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2]];
  return (match[1] ? Number(match[1]) : 1) * unit;
}
