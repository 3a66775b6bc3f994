"""The web dashboard (`GET /` of the gateway) in a real headless Chromium, on the four services
replaying real data: the page speaks only the public protocol, shows what an `init` at the same
seq holds, shows a fill within 2 s of its refresh, refuses a wrong key, survives a gateway
killed and restarted without missing a seq, and drops a connection whose keepalive gets no reply
(a frozen gateway). Plus the serving and the pinned-vendor checks, which need no browser.

The page is locked down (issue 19): it and its files come with a Content-Security-Policy that
admits only the gateway's own scripts, styles, images and websocket, with `nosniff` and
`no-referrer`; the live test draws under it without a violation. Against a stand-in gateway (the
page's files and a `/ws` served from this process), the policy refuses an injected inline script,
event-handler attribute, <style> and eval, and strings of an `init`, a refresh and an error that
hold HTML show as text and run nothing, with the policy and without it (the page alone must hold).

The page draws whatever strategy a bot trades (SPEC 3.2 rule 4): beside the Bollinger bot, an RSI
bot and a MACD bot with risk exits (SPEC 3.3) replay the same data, each on a page of its own: the
RSI and MACD indicators in a pane below the candles, a point per kline the page holds, the bands
still over the Bollinger candles, and the exits marked apart from the strategy's own fills.

The browser is the system Chromium (Debian's `chromium`), driven by Playwright through its
`executable_path`; without one, the browser test is skipped. `CHROMIUM_PATH` names another.
Screenshots land in the test's tmp dir and in `artifacts/` (`BANDWAGON_ARTIFACTS` overrides).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import shutil
import signal
import tarfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from redis.asyncio import Redis

from services.gateway.dashboard import vendor
from services.gateway.dashboard.routes import (
    CONTENT_SECURITY_POLICY,
    SECURITY_HEADERS,
    dashboard_routes,
    static_files,
)
from tests.e2e.services import REPO, Deployment, bot_seq
from tests.integration.gateway_harness import client, expect_error, running_gateway, send_json
from tests.integration.gateway_seed import seed_bot
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer, free_port

DATA = Path(__file__).parents[1] / "data"
API_KEY = "dashboard+e2e/key=0123456789"  # "+", "/", "=": the #key= fragment keeps them
PRODUCT = "ALT-BTC"
SPEED = 1200  # 20 minutes of data a second: a fill every second or two, the longest gap ~12 s

RSI_KEY = "dashboard-rsi-e2e-key-0123456789"
MACD_KEY = "dashboard-macd-e2e-key-0123456789"
# The keys of the RSI and MACD bots, by the variable each bot names (`api_key_env`).
STRATEGY_KEYS = {"DASH_RSI_API_KEY": RSI_KEY, "DASH_MACD_API_KEY": MACD_KEY}
# MACD's exits are small for this altcoin's 1-minute klines: `bandwagon backtest` of this bot
# over the file fills 438 times, 127 of them stop-loss, take-profit and trailing-stop exits, the
# first (a trailing stop) at kline 208, 10 s into the replay at SPEED.
BOTS_YAML = """
bots:
  - id: dash
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 1000
    kline_history: 300
    trade_history: 500
    strategy: {order_type: maker, order_timeout_ms: 120000, mode: both}
    symbols:
      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 3, isolated: true}
  - id: dash-rsi
    api_key_env: DASH_RSI_API_KEY
    exchange: binance
    start_capital: 1.0
    strategy: {name: RSI, period: 14, window: 100, order_type: taker, mode: both}
    symbols:
      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 3, isolated: true}
  - id: dash-macd
    api_key_env: DASH_MACD_API_KEY
    exchange: binance
    start_capital: 1.0
    strategy:
      name: MACD
      fast: 12
      slow: 26
      signal: 9
      window: 200
      order_type: taker
      mode: both
      stop_loss_pct: 0.3
      take_profit_pct: 0.5
      trailing_stop_pct: 0.3
    symbols:
      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 3, isolated: true}
"""

# STATUS fields the page shows, by the data-field of its element (raw value in data-value).
STATUS_FIELDS = [
    "currentCapital",
    "totalCapital",
    "startCapital",
    "usdtProfit",
    "profit",
    "dynamicUsdtProfit",
    "dynamicProfit",
    "winLostRate",
    "tradeNum",
    "startTime",
    "status",
]
SYMBOL_FIELDS = ["price", "signal", "assetCaptial", "usdtProfit", "dynamicUsdtProfit", "leverage"]


@pytest.fixture(autouse=True)
def strategy_bot_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The RSI and MACD bots' keys, in the environment every service of the deployment reads."""
    for variable, key in STRATEGY_KEYS.items():
        monkeypatch.setenv(variable, key)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def require_browser() -> str:
    """The Chromium to drive (the test is skipped without one), with the chart library in place."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium, or set CHROMIUM_PATH)")
    if not vendor.is_installed(vendor.read_lock()):
        pytest.fail("the chart library is missing: python -m services.gateway.dashboard.vendor")
    return executable


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("BANDWAGON_ARTIFACTS") or REPO / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def assert_locked_down(headers: Mapping[str, str], what: str) -> None:
    """The page's security headers, as routes.py sets them, on a response (`what`)."""
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == value, (what, name, headers.get(name.lower()))


# -- no browser: what the gateway serves, and the pinned vendor files ------------------------------


def test_the_policy_admits_only_the_gateway_itself() -> None:
    directives = [part.strip().split() for part in CONTENT_SECURITY_POLICY.split(";")]
    sources = {name: values for name, *values in directives}
    assert len(sources) == len(directives), "each directive once"
    assert set(sources) >= {
        "default-src", "script-src", "style-src", "img-src", "connect-src",
        "base-uri", "form-action", "frame-ancestors",
    }  # fmt: skip
    for name in ("default-src", "base-uri", "form-action", "frame-ancestors"):
        assert sources[name] == ["'none'"], name
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        assert sources[name] == ["'self'"], name  # no 'unsafe-inline', no scheme, no other host
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_vendor_files_are_taken_only_from_a_tarball_of_the_pinned_digest(tmp_path: Path) -> None:
    data = _tarball({"package/dist/lib.mjs": b"export const x = 1;\n", "package/LICENSE": b"L"})
    lock = vendor.Lock(
        "lib", "1.0.0", "https://registry.npmjs.org/lib/-/lib-1.0.0.tgz", _integrity(data),
        {"package/dist/lib.mjs": "lib.mjs", "package/LICENSE": "LICENSE"},
    )  # fmt: skip
    with pytest.raises(vendor.VendorError, match="integrity mismatch"):
        vendor.verify(data + b"x", lock.integrity)
    with pytest.raises(vendor.VendorError, match="only sha512"):
        vendor.verify(data, "sha1-" + lock.integrity[7:])
    assert not vendor.is_installed(lock, tmp_path)
    vendor.verify(data, lock.integrity)
    vendor.extract(lock, data, tmp_path)
    assert (tmp_path / "lib.mjs").read_bytes() == b"export const x = 1;\n"
    assert vendor.is_installed(lock, tmp_path)
    (tmp_path / "LICENSE").unlink()
    assert not vendor.is_installed(lock, tmp_path)
    assert vendor.tarball_url(lock, {"NPM_CONFIG_REGISTRY": "https://mirror.example/npm/"}) == (
        "https://mirror.example/npm/lib/-/lib-1.0.0.tgz"
    )


def test_the_committed_lock_pins_a_sha512_tarball_of_the_npm_registry() -> None:
    lock = vendor.read_lock()
    assert lock.name == "lightweight-charts"
    assert lock.tarball.startswith(f"{vendor.NPM_REGISTRY}/lightweight-charts/-/")
    assert lock.tarball.endswith(f"-{lock.version}.tgz")
    assert lock.integrity.startswith("sha512-")
    assert len(base64.b64decode(lock.integrity[7:])) == 64
    assert "lightweight-charts.standalone.production.mjs" in lock.files.values()
    tracked = vendor.VENDOR_DIR / ".gitignore"
    assert tracked.read_text().splitlines()[1:] == ["*", "!.gitignore"]


async def test_the_page_is_served_with_its_files_and_without_the_chart_library(
    tmp_path: Path,
) -> None:
    api = FastAPI()
    dashboard_routes(api, vendor_dir=tmp_path)  # an empty vendor dir: never fetched
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert_locked_down(page.headers, "/")
        assert '<script type="module" src="dashboard/js/main.js">' in page.text
        for name in static_files(vendor_dir=tmp_path):  # every file, the missing library too
            response = await client.get(f"/dashboard/{name}")
            assert response.status_code == (404 if name.startswith("vendor/") else 200), name
            assert_locked_down(response.headers, name)
        script = await client.get("/dashboard/js/main.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/dashboard/dashboard.css")).status_code == 200
        library = await client.get("/dashboard/vendor/lightweight-charts.standalone.production.mjs")
        assert library.status_code == 404
        assert_locked_down(library.headers, "a missing file")
        for path in ("/dashboard/../routes.py", "/dashboard/%2e%2e/vendor.py", "/dashboard/x.py"):
            assert (await client.get(path)).status_code == 404, path
    # no file of the page writes data through innerHTML, nor runs a string as code
    for script_path in (vendor.HERE / "static" / "js").glob("*.js"):
        text = script_path.read_text()
        assert not any(sink in text for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML"))
        assert not any(sink in text for sink in ("eval(", "new Function", "document.write"))
    # nothing inline for the policy to refuse: no script without src, no style, no on* attribute
    html = (vendor.HERE / "static" / "index.html").read_text()
    assert html.count("<script") == html.count('<script type="module" src="') == 1
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE), "an inline event handler"


async def test_a_real_gateway_serves_the_page_beside_its_websocket_and_health(
    redis_server: RedisServer, redis: Redis
) -> None:
    await seed_bot(redis, "alpha")  # a key registry: an unknown key is `unauthorized` (rule 18)
    async with running_gateway(redis_server.url) as gateway:
        async with httpx.AsyncClient(base_url=gateway.http) as http:
            page = await http.get("/")
            assert page.status_code == 200 and "<title>Bandwagon</title>" in page.text
            assert_locked_down(page.headers, "/")
            script = await http.get("/dashboard/js/connection.js")
            assert script.status_code == 200
            assert_locked_down(script.headers, "connection.js")
            assert (await http.get("/healthz")).text == "ok"
            assert (await http.get("/nothing-here")).status_code == 404
        async with client(gateway.url) as ws:  # /ws is still the Status API
            await send_json(ws, {"action": "init", "apiKey": "not-a-configured-key-at-all"})
            await expect_error(ws, "unauthorized")


# -- the browser test ------------------------------------------------------------------------------


@dataclass
class Follower:
    """A websocket client beside the page: the arrival time and new trades of each refresh."""

    url: str
    seq: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)  # seq -> time.monotonic()
    new_trades: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    filled: asyncio.Event = field(default_factory=asyncio.Event)  # set at each refresh with fills

    async def run(self, stop: asyncio.Event) -> None:
        async with websockets.connect(self.url, max_size=2**26) as ws:
            await ws.send(orjson.dumps({"action": "init", "apiKey": API_KEY}).decode())
            init = orjson.loads(await ws.recv())
            self.seq = init["seq"]
            while not stop.is_set():
                try:
                    text = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                arrived = time.monotonic()
                message = orjson.loads(text)
                assert message["action"] == "refresh" and message["seq"] == self.seq + 1
                self.seq = message["seq"]
                self.arrivals[self.seq] = arrived
                trades = [t for s in message["data"]["symbols"] for t in s["trades"]]
                if trades:
                    self.new_trades[self.seq] = trades
                    self.filled.set()


async def fetch_init(url: str) -> dict[str, Any]:
    async with websockets.connect(url, max_size=2**26) as ws:
        await ws.send(orjson.dumps({"action": "init", "apiKey": API_KEY}).decode())
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["action"] == "init", message
    return message


PAGE_SNAPSHOT = """() => {
  const values = (root) => {
    const out = {};
    for (const dd of root.querySelectorAll('dd[data-field], span[data-field]')) {
      out[dd.dataset.field] = {value: JSON.parse(dd.dataset.value ?? 'null'), text: dd.textContent};
    }
    return out;
  };
  const symbols = {};
  for (const card of document.querySelectorAll('#symbols [data-product]')) {
    symbols[card.dataset.product] = values(card);
  }
  return {
    seq: Number(document.body.dataset.seq),
    status: values(document.querySelector('#status')),
    symbols,
    rows: document.querySelectorAll('#trades tbody tr').length,
    firstRow: document.querySelector('#trades tbody tr')?.dataset.orderId ?? null,
  };
}"""

CANVAS_INK = """() => {
  let ink = 0;
  for (const canvas of document.querySelectorAll('.chart canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) ink += 1;
  }
  return ink;
}"""

SHOWS_FILL = """([product, orderId]) => {
  const row = document.querySelector(`#trades tbody tr[data-order-id="${orderId}"]`);
  const chart = window.bandwagonDashboard.view.cards.get(product).chart;
  const marker = chart.markers.markers().some((m) => m.id === String(orderId));
  return Boolean(row) && marker;
}"""

# What a symbol's chart draws (chart.js `describe`) and how it matches the klines and fills the
# page holds, read in one go (no message is applied in between). Per drawn indicator: `valued`,
# the klines the page holds with a value; `drawn`, those with a point at their time; `mismatched`,
# those whose point (or its absence) differs from their value (or null); `stray`, points
# without a candle.
CHART_STATE = """(product) => {
  const dash = window.bandwagonDashboard;
  const card = dash.view.cards.get(product);
  const chart = card.chart;
  const klines = dash.state.klinesOf(product);
  const candles = new Set(chart.candles.data().map((c) => c.time));
  const time = (k) => Math.floor(k.time / 1000);
  const shown = chart.describe();
  const [valued, drawn, mismatched, stray] = [{}, {}, {}, {}];
  for (const [name, {series}] of chart.indicators) {
    if (!series) continue;
    const data = series.data().filter((p) => 'value' in p);
    const points = new Map(data.map((p) => [p.time, p.value]));
    valued[name] = klines.filter((k) => typeof k.strategy[name] === 'number').length;
    drawn[name] = klines.filter((k) => points.has(time(k))).length;
    mismatched[name] = klines.filter(
      (k) => (points.get(time(k)) ?? null) !== (k.strategy[name] ?? null)).length;
    stray[name] = data.filter((p) => !candles.has(p.time)).length;
  }
  return {
    drawn: shown, points: drawn, valued, mismatched, stray, klines: klines.length,
    header: card.root.querySelector('[data-field="strategy"]').textContent,
    legend: card.root.querySelector('.legend').textContent.replace(/\\s+/g, ' '),
    readout: [...card.root.querySelectorAll('.readout [data-indicator]')]
      .map((e) => e.dataset.indicator),
    firstTime: chart.firstTime,
    trades: dash.state.tradesOf(product).map((t) => ({
      order_id: t.order_id, action: t.action, type: t.type, position_side: t.position_side,
      order_type: t.order_type, time: t.time,
    })),
    rows: Object.fromEntries([...document.querySelectorAll('#trades tbody tr')]
      .map((r) => [r.dataset.orderId, r.dataset.cause])),
  };
}"""

# The first indicator value on the chart, and for MACD an exit marker beside a strategy one.
HAS_VALUES = """([product, name]) => {
  const chart = window.bandwagonDashboard?.view?.cards?.get(product)?.chart;
  return Boolean(chart) && chart.describe().indicators[name]?.points > 0;
}"""
HAS_EXIT = """(product) => {
  const markers = window.bandwagonDashboard.view.cards.get(product).chart.markers.markers();
  return markers.some((m) => /^(SL|TS|TP) /.test(m.text))
    && markers.some((m) => /^[LS][+\u2212]$/.test(m.text));
}"""
EXIT_LABELS = {"stopLoss": "SL", "trailingStop": "TS", "takeProfit": "TP"}
EXIT_COLOR = "#fdd835"  # chart.js EXIT
MINUS = "\u2212"  # a minus sign: "L" and a minus closes a long
STRATEGY_COLORS = {"#26a69a", "#ef5350"}  # chart.js UP, DOWN


def check_strategy_chart(
    shown: dict[str, Any], strategy: str, price: list[str], pane: dict[str, str]
) -> None:
    """The chart of a `strategy` bot: `price` indicators over the candles, `pane` ones (name ->
    series type) in the pane below, each with a point at every kline the page holds, carrying
    the kline's value; any other indicator the kline carries is not drawn."""
    drawn = shown["drawn"]
    assert shown["header"] == drawn["strategy"] == strategy, shown["header"]
    assert drawn["panes"] == (2 if pane else 1), drawn["panes"]
    assert set(drawn["order"]) >= set(price) | set(pane), drawn["order"]
    assert shown["readout"] == drawn["order"], "every indicator's newest value under the chart"
    for name, indicator in drawn["indicators"].items():
        if name in price:
            assert (indicator["place"], indicator["pane"], indicator["type"]) == (
                "price", 0, "Line"), (name, indicator)  # fmt: skip
        elif name in pane:
            assert indicator["pane"] == 1 and indicator["type"] == pane[name], (name, indicator)
        else:
            assert indicator["place"] == "hidden" and indicator["pane"] is None, (name, indicator)
            continue
        # a point at each kline the page holds that has a value, carrying it, and none where
        # it is null; every point on a candle (the chart may hold a few more candles than
        # the page's klines: it drops the old ones now and then)
        assert shown["points"][name] == shown["valued"][name] > 0, (name, shown)
        assert shown["mismatched"][name] == shown["stray"][name] == 0, (name, shown)
        assert drawn["candles"] >= shown["klines"] and indicator["points"] >= shown["points"][name]
    for area, names in (("Over the candles", price), ("Below", list(pane))):
        assert (f"{area}: {', '.join(names)}." in shown["legend"]) == bool(names), shown["legend"]


def check_fill_markers(shown: dict[str, Any]) -> dict[str, int]:
    """Every fill on the chart's candles has its marker: a risk exit a yellow square labelled SL,
    TS or TP, a liquidation an orange square, a strategy fill a green or red arrow or circle
    labelled L+, L-, S+ or S- (a minus sign); the table says which. Returns the markers counted
    by cause."""
    markers = {m["id"]: m for m in shown["drawn"]["markers"]}
    counts: dict[str, int] = {}
    for trade in shown["trades"]:
        if trade["time"] // 60_000 * 60 < shown["firstTime"]:
            continue  # its (1-minute) candle is no longer on the chart
        marker = markers[str(trade["order_id"])]
        head = trade["action"].split("_")[0]
        side = "L" if trade["position_side"] == "long" else "S"
        cause = head if head in EXIT_LABELS or head == "liquidation" else "strategy"
        counts[cause] = counts.get(cause, 0) + 1
        assert shown["rows"][str(trade["order_id"])] == cause, trade
        if cause in EXIT_LABELS:
            assert (marker["shape"], marker["color"], marker["text"]) == (
                "square", EXIT_COLOR, f"{EXIT_LABELS[head]} {side}"), (trade, marker)  # fmt: skip
        elif cause == "liquidation":
            assert (marker["shape"], marker["text"]) == ("square", f"LIQ {side}"), (trade, marker)
            assert marker["color"] not in STRATEGY_COLORS | {EXIT_COLOR}, (trade, marker)
        else:
            assert marker["shape"] in {"arrowUp", "arrowDown", "circle"}, (trade, marker)
            assert marker["color"] in STRATEGY_COLORS, (trade, marker)
            assert marker["text"] in {"L+", f"L{MINUS}", "S+", f"S{MINUS}"}, (trade, marker)
    assert len(markers) == sum(counts.values()), "a marker per fill on the chart, no other"
    return counts


CLIENT_RECORD = """() => {
  const c = window.bandwagonDashboard.client;
  return {applied: [...c.appliedSeqs], inits: [...c.fullInits], resumes: [...c.resumes],
          seq: c.state.seq};
}"""


# Installed before the page's own scripts: every CSP violation the page reports, and every element
# inserted anywhere that could run or load something (an image, a frame, a script without src, an
# SVG, an on* attribute), as a page that parsed HTML from data would insert.
WATCH = """(() => {
  const seen = {violations: [], inserted: []};
  window.lockdownWatch = seen;
  document.addEventListener('securitypolicyviolation', (event) => {
    seen.violations.push(
      {directive: event.effectiveDirective, blocked: event.blockedURI, sample: event.sample});
  });
  const RISKY = new Set(['img', 'image', 'iframe', 'frame', 'object', 'embed', 'svg', 'math']);
  const risky = (element) => RISKY.has(element.localName)
    || (element.localName === 'script' && !element.hasAttribute('src'))
    || [...element.attributes].some((attribute) => attribute.name.toLowerCase().startsWith('on'));
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        for (const element of [node, ...node.querySelectorAll('*')]) {
          if (risky(element)) seen.inserted.push(element.outerHTML.slice(0, 200));
        }
      }
    }
  }).observe(document, {childList: true, subtree: true});
})();"""


async def assert_responses_locked_down(responses: list[Any], origin: str) -> set[str]:
    """Every HTTP response of the page's own origin carries the security headers; returns the
    paths seen."""
    paths = set()
    for response in responses:
        if not response.url.startswith(origin):
            continue
        path = response.url[len(origin) :].split("#")[0]
        assert_locked_down(await response.all_headers(), path)
        paths.add(path)
    return paths


async def screenshot(page: Any, directory: Path, name: str, full_page: bool = True) -> None:
    """A screenshot in the test's tmp dir, copied to the artifacts."""
    await page.screenshot(path=directory / name, full_page=full_page)
    shutil.copy(directory / name, artifacts_dir() / name)


async def wait_for_state(page: Any, state: str, timeout_s: float) -> None:
    await page.wait_for_selector(f'#connection[data-state="{state}"]', timeout=timeout_s * 1000)


async def same_seq_snapshot(page: Any, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The page's figures and an init fetched at the same seq (retried across refreshes)."""
    for _ in range(50):
        before = await page.evaluate(PAGE_SNAPSHOT)
        init = await fetch_init(url)
        after = await page.evaluate(PAGE_SNAPSHOT)
        if before["seq"] == init["seq"] == after["seq"]:
            return before, init
        await asyncio.sleep(0.1)
    raise AssertionError("the page and a fresh init never agreed on a seq")


@pytest.mark.timeout(240)
async def test_the_dashboard_follows_the_bot_live_in_a_real_browser(
    deployment: Deployment, redis: Redis, tmp_path: Path
) -> None:
    executable = require_browser()
    from playwright.async_api import async_playwright

    deployment.start("accounting")
    deployment.start("gateway")
    deployment.start("strategy")
    replay = f"--replay={PRODUCT}={DATA / 'klines-1m-3000.csv'}"
    deployment.start("ingest", "--source=replay", replay, f"--speed={SPEED}")
    deployment.wait_ready("accounting", "gateway", "strategy", "ingest")
    base = f"http://127.0.0.1:{deployment.gateway_port}/"
    stop = asyncio.Event()
    follower = Follower(deployment.ws_url)
    following = asyncio.create_task(follower.run(stop))

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.add_init_script(WATCH)
            responses: list[Any] = []
            page.on("response", lambda response: responses.append(response))
            problems: list[str] = []

            def console(message: Any) -> None:  # a dropped websocket is expected, not a problem
                if message.type == "error" and "WebSocket" not in message.text:
                    problems.append(message.text)

            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", console)

            # the key typed into the form; the chart drawn
            await page.goto(base)
            await page.fill("#api-key", API_KEY)
            await page.click("#key-form button[type=submit]")
            await wait_for_state(page, "live", 15)
            assert await page.evaluate("window.bandwagonDashboard.chartsAvailable") is True
            await page.wait_for_function("document.body.dataset.seq > 0", timeout=5000)
            await page.wait_for_function(f"({CANVAS_INK})() >= 500", timeout=20_000)
            # drawn under the policy (its websocket too: connect-src 'self' covers ws:)
            paths = await assert_responses_locked_down(responses, base[:-1])
            assert {"/", "/dashboard/js/main.js", "/dashboard/dashboard.css"} <= paths, paths
            assert "/dashboard/vendor/lightweight-charts.standalone.production.mjs" in paths

            # the RSI and the MACD bot, each on a page of its own, followed from the start
            strategy_pages: dict[str, Any] = {}
            for name, key in (("rsi", RSI_KEY), ("macd", MACD_KEY)):
                strategy_pages[name] = other = await browser.new_page(
                    viewport={"width": 1280, "height": 1000}
                )
                other.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                other.on("console", console)
                await other.goto(base + f"#key={key}")
            for other in strategy_pages.values():
                await wait_for_state(other, "live", 15)

            # a fill during the test: a table row and a marker within 2 s of its refresh
            seen = follower.seq
            follower.filled.clear()
            await asyncio.wait_for(follower.filled.wait(), 40)
            fill_seq = min(seq for seq in follower.new_trades if seq > seen)
            trade = follower.new_trades[fill_seq][-1]
            while not await page.evaluate(SHOWS_FILL, [PRODUCT, trade["order_id"]]):
                late = time.monotonic() - follower.arrivals[fill_seq]
                assert late < 2.0, f"fill {trade['order_id']} not on the page {late:.2f} s after"
                await asyncio.sleep(0.02)

            # the figures are those of an init at the same seq, formatted to 8 decimals
            shown, init = await same_seq_snapshot(page, deployment.ws_url)
            status = init["status"]
            for name in STATUS_FIELDS:
                assert shown["status"][name]["value"] == status[name], name
            assert shown["status"]["winLost"]["value"] == [status["win"], status["lost"]]
            assert shown["status"]["totalCapital"]["text"] == f"{status['totalCapital']:.8f}"
            assert shown["status"]["tradeNum"]["text"] == str(status["tradeNum"])
            (symbol,) = init["symbols"]
            for name in SYMBOL_FIELDS:
                assert shown["symbols"][PRODUCT][name]["value"] == symbol[name], name
            assert shown["symbols"][PRODUCT]["price"]["text"] == f"{symbol['price']:.8f} BTC"
            assert shown["rows"] == len(symbol["trades"]) > 0
            assert shown["firstRow"] == str(symbol["trades"][-1]["order_id"]), "newest first"
            await page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
            shutil.copy(tmp_path / "dashboard.png", artifacts_dir() / "dashboard.png")

            # sortable: oldest first on a second click of "time"
            await page.click('#trades th button[data-sort="time"]')
            first = await page.get_attribute("#trades tbody tr", "data-order-id")
            assert first == str(min(t["order_id"] for t in symbol["trades"]))
            await page.click('#trades th button[data-sort="time"]')

            # a phone-width screen: nothing wider than the viewport
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.wait_for_timeout(300)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width} px wide on a 390 px screen"
            await page.screenshot(path=tmp_path / "dashboard-phone.png")
            shutil.copy(tmp_path / "dashboard-phone.png", artifacts_dir() / "dashboard-phone.png")
            await page.set_viewport_size({"width": 1280, "height": 1000})

            # the gateway killed: "reconnecting"; restarted: resumed without a missed seq
            stop.set()
            await following
            gateway = deployment.services["gateway"]
            gateway.process.kill()
            gateway.process.wait()
            await wait_for_state(page, "reconnecting", 5)
            await asyncio.sleep(1.5)  # refreshes go on being published meanwhile
            deployment.start("gateway")
            deployment.wait_ready("gateway")
            await wait_for_state(page, "live", 45)
            target = await bot_seq(redis, "dash")
            await page.wait_for_function(f"document.body.dataset.seq >= {target}", timeout=10_000)
            record = await page.evaluate(CLIENT_RECORD)
            assert len(record["inits"]) == 1 and record["resumes"], record["resumes"]
            applied = record["applied"]
            expected = list(range(record["inits"][0] + 1, record["seq"] + 1))
            assert applied == expected, "every seq after the init, once, in order"

            # each strategy drawn from its klines' `strategy`, on the pages that followed it
            # from the start (and through the gateway's restart): the bands over the Bollinger
            # candles (pb and pw not drawn), RSI and MACD in a pane below; exits marked apart
            bollinger = await page.evaluate(CHART_STATE, PRODUCT)
            check_strategy_chart(bollinger, "BollingerBands", ["middle", "upper", "lower"], {})
            check_fill_markers(bollinger)
            rsi_page, macd_page = strategy_pages["rsi"], strategy_pages["macd"]
            for other in strategy_pages.values():
                await wait_for_state(other, "live", 45)
            await rsi_page.wait_for_function(
                HAS_VALUES, arg=[PRODUCT, "rsi"], polling=100, timeout=30_000
            )
            rsi = await rsi_page.evaluate(CHART_STATE, PRODUCT)
            check_strategy_chart(rsi, "RSI", [], {"rsi": "Line"})
            check_fill_markers(rsi)
            await screenshot(rsi_page, tmp_path, "dashboard-rsi.png")
            await macd_page.wait_for_function(HAS_EXIT, arg=PRODUCT, polling=100, timeout=30_000)
            macd = await macd_page.evaluate(CHART_STATE, PRODUCT)
            pane = {"macd": "Line", "macdsignal": "Line", "macdhist": "Histogram"}
            check_strategy_chart(macd, "MACD", [], pane)
            counts = check_fill_markers(macd)
            assert counts["strategy"] and any(counts.get(exit) for exit in EXIT_LABELS), counts
            await screenshot(macd_page, tmp_path, "dashboard-macd.png")
            await macd_page.set_viewport_size({"width": 390, "height": 844})
            await macd_page.wait_for_timeout(300)
            width = await macd_page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the MACD page is {width} px wide on a 390 px screen"
            await screenshot(macd_page, tmp_path, "dashboard-macd-phone.png", full_page=False)
            for other in strategy_pages.values():
                await other.close()

            # a wrong key: an error, no data
            wrong = await browser.new_page()
            await wrong.goto(base + "#key=not-the-right-key-0123456789")
            await wait_for_state(wrong, "unauthorized", 10)
            assert await wrong.is_visible("#key-error")
            assert "unauthorized" in (await wrong.text_content("#key-error") or "")
            assert await wrong.is_hidden("#bot")
            assert "#key=" not in wrong.url, "the key leaves the address bar"

            # no chart library: the page says so and still shows the bot
            bare = await browser.new_page()
            await bare.route("**/vendor/*.mjs", lambda route: route.fulfill(status=404))
            await bare.goto(base + f"#key={API_KEY}")
            await wait_for_state(bare, "live", 15)
            assert await bare.is_visible("#charts-unavailable")
            assert await bare.is_visible("#status")
            assert problems == [], problems
            watched = await page.evaluate("window.lockdownWatch")
            assert watched == {"violations": [], "inserted": []}, watched
        finally:
            stop.set()
            await browser.close()
    if not following.done():
        await following


KEEPALIVE_S = 25  # the page's cadence (connection.js): a `refresh` at least every 30 s
KEEPALIVE_REPLY_S = 10  # ... and 10 s without its reply is a dead connection (SPEC 5.1 rule 6)


@pytest.mark.timeout(180)
async def test_the_page_drops_a_connection_whose_keepalive_gets_no_reply(
    deployment: Deployment,
) -> None:
    """SPEC 5.1 rule 6, the client half. A browser cannot see the gateway's pings, so the page
    sends `refresh` at least every 30 s and takes 10 s without its reply for a dead connection.
    No market data flows here, so the replies are the only traffic: the bot's newest refresh, at
    the page's own seq, ignored by 2.1 rule 8 (no gap, no `init` again) yet a reply. Then this
    test's own gateway is frozen (SIGSTOP: its kernel still accepts the bytes, nothing answers,
    no close ever comes): the page says "reconnecting" within 40 s, and once the gateway runs
    again (SIGCONT) it resumes there with `init`, `since` and `epoch`."""
    executable = require_browser()
    from playwright.async_api import async_playwright

    deployment.start("accounting")
    gateway = deployment.start("gateway")  # owned by this test alone: frozen below
    deployment.wait_ready("accounting", "gateway")
    keepalive = {"action": "refresh", "apiKey": API_KEY}
    sent: list[list[Any]] = []  # the data frames the page sent, per websocket it opened

    def opened(websocket: Any) -> None:
        frames: list[Any] = []
        sent.append(frames)
        websocket.on("framesent", lambda payload: frames.append(orjson.loads(payload)))

    async def frames_of_first(count: int, timeout_s: float) -> None:
        await eventually(
            lambda: len(sent[0]) >= count,
            timeout_s=timeout_s,
            poll_s=0.05,
            what=lambda: f"{count} frames from the page; it sent only {sent[0]}",
        )

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        frozen = False
        try:
            page = await browser.new_page()
            page.on("websocket", opened)
            await page.goto(f"http://127.0.0.1:{deployment.gateway_port}/#key={API_KEY}")
            await wait_for_state(page, "live", 15)
            live_at = time.monotonic()
            (init,) = (await page.evaluate(CLIENT_RECORD))["inits"]

            # the first keepalive within 30 s; answered, so still live 10 s on, nothing resent
            await frames_of_first(2, 30)
            assert time.monotonic() - live_at <= 30
            assert sent[0] == [{"action": "init", "apiKey": API_KEY}, keepalive], sent
            await asyncio.sleep(KEEPALIVE_REPLY_S + 1)
            assert await page.get_attribute("#connection", "data-state") == "live"
            assert len(sent) == 1 and len(sent[0]) == 2, sent
            record = await page.evaluate(CLIENT_RECORD)
            assert record["inits"] == [init] and record["resumes"] == [], record

            # the gateway frozen: the next keepalive goes unanswered
            os.kill(gateway.process.pid, signal.SIGSTOP)
            frozen = True
            frozen_at = time.monotonic()
            await wait_for_state(page, "reconnecting", 40)
            assert time.monotonic() - frozen_at <= 40
            assert sent[0][-1] == keepalive and len(sent[0]) == 3, sent[0]
            assert await page.evaluate("window.bandwagonDashboard.client.deadConnections") == 1

            # running again: the connection the page opened meanwhile resumes at its seq
            os.kill(gateway.process.pid, signal.SIGCONT)
            frozen = False
            await wait_for_state(page, "live", 45)
            record = await page.evaluate(CLIENT_RECORD)
            assert record["inits"] == [init] and len(record["resumes"]) == 1, record
            epoch = await page.evaluate("window.bandwagonDashboard.state.epoch")
            since = record["resumes"][0]
            resume = {"action": "init", "apiKey": API_KEY, "since": since, "epoch": epoch}
            assert sent[-1][0] == resume, sent
            assert len(sent[0]) == 3, "nothing more on the dropped connection"
        finally:
            if frozen:
                os.kill(gateway.process.pid, signal.SIGCONT)
            await browser.close()


# -- a stand-in gateway: the policy in the browser, and hostile strings shown as text -------------

XSS = "<img src=x onerror=alert(1)>"
XSS_FLAG = '<img src=x onerror="window.pwned = true">'
STAND_IN_KEY = "stand-in-key-0123456789"
STAND_IN_EPOCH = "00112233445566ff"
T0 = 1_700_000_040_000  # the open time of a minute, ms


def hostile_kline(index: int) -> dict[str, Any]:
    """A kline whose strategy's display name and one indicator name are HTML."""
    time_ms = T0 + index * 60_000
    close = 0.0001 + index * 0.000001
    return {
        "period_id": f"m{time_ms // 60_000}",
        "time": time_ms,
        "size": "1m",
        "close_time": time_ms + 59_999,
        "open": close,
        "high": close * 1.01,
        "low": close * 0.99,
        "close": close,
        "volume": 10.0,
        "strategy": {
            f"{XSS}_buyCrossCount": 0,
            f"{XSS}_sellCrossCount": 0,
            f"{XSS}_buy": False,
            f"{XSS}_sell": False,
            XSS_FLAG: close,
        },
    }


def hostile_trade(order_id: int, index: int, action: str, order_type: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "time": T0 + index * 60_000 + 1_000,
        "execution_time": 5,
        "slippage": 0.0,
        "type": "sell",
        "size": "1.00",
        "fee": 0.0000001,
        "price": "0.00010000",
        "order_type": order_type,
        "action": action,
        "profit": 0.0,
        "usdtProfit": -0.0000001,
        "position_side": XSS_FLAG,
    }


def hostile_symbol(
    product_id: str, klines: list[dict[str, Any]], trades: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "price": 0.0001,
        "normalized": f"{XSS}.{product_id}",
        "min_size": "0.01",
        "asset": XSS_FLAG,
        "currency": XSS,
        "assetCaptial": 0.0,
        "leverage": 3,
        "isolated": True,
        "usdtProfit": 0.0,
        "profit": 0.0,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "signal": XSS,
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "trades": trades,
        "lastTradeTime": trades[-1]["time"] if trades else 0,
        "klines": klines,
    }


def hostile_status(trades: int) -> dict[str, Any]:
    return {
        "tradeListLen": 1,
        "startCapital": 1.0,
        "currentCapital": 1.0,
        "tradeNum": trades,
        "usdtProfit": 0.0,
        "profit": 0.0,
        "dynamicUsdtProfit": 0.0,
        "dynamicProfit": 0.0,
        "totalCapital": 1.0,
        "win": 0,
        "lost": 0,
        "winLostRate": 0.0,
        "exchange": XSS_FLAG,
        "startTime": T0,
        "timeZoneOffset": 0,
        "status": "work",
    }


def hostile_replies() -> list[dict[str, Any]]:
    """What a gateway reading a compromised Redis could send: an `init`, the next refresh (a fill
    and a second symbol), then an error, every string field of them HTML."""
    flags = {"hasConfig": True, "hasStrategy": True, "hasMarket": True, "hasBacktest": False}
    init = {
        "action": "init",
        "seq": 10,
        "epoch": STAND_IN_EPOCH,
        "exchange": {"name": XSS, "makerFee": 0.1, "takerFee": 0.1},
        "symbols": [
            hostile_symbol(
                XSS, [hostile_kline(i) for i in range(3)], [hostile_trade(1, 1, XSS, XSS)]
            )
        ],
        "status": hostile_status(1) | flags,
    }
    refresh = {
        "action": "refresh",
        "seq": 11,
        "epoch": STAND_IN_EPOCH,
        "data": {
            "status": hostile_status(2),
            "symbols": [
                hostile_symbol(XSS, [hostile_kline(3)], [hostile_trade(2, 3, XSS_FLAG, XSS_FLAG)]),
                hostile_symbol(XSS_FLAG, [hostile_kline(3)], []),
            ],
        },
    }
    error = {"action": "error", "code": "bad_request", "message": XSS}
    return [init, refresh, error]


@asynccontextmanager
async def stand_in_gateway(replies: list[dict[str, Any]]) -> AsyncIterator[str]:
    """The dashboard's routes and a `/ws` that answers the stand-in key's `init` with `replies`
    (and nothing else), on loopback in this process. Yields the page's URL."""
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    dashboard_routes(api)

    @api.websocket("/ws")
    async def status_api(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                request = orjson.loads(await websocket.receive_text())
                if request == {"action": "init", "apiKey": STAND_IN_KEY}:
                    for reply in replies:
                        await websocket.send_text(orjson.dumps(reply).decode())
        except WebSocketDisconnect:
            return

    port = free_port()
    config = uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, timeout_s=10, poll_s=0.01, what="uvicorn started")
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        server.force_exit = True
        await asyncio.wait_for(task, 10)


# Where the page shows each hostile string: the text of the elements, read back.
SHOWN_TEXT = """() => {
  const text = (selector) => [...document.querySelectorAll(selector)].map((e) => e.textContent);
  const cards = [...document.querySelectorAll('#symbols [data-product]')];
  return {
    exchange: document.querySelector('#bot-exchange').textContent,
    products: text('#symbols .product'),
    cardProducts: cards.map((card) => card.dataset.product),
    signals: text('#symbols [data-field="signal"]'),
    prices: text('#symbols [data-field="price"]'),
    strategies: text('#symbols [data-field="strategy"]'),
    readouts: text('#symbols .readout span'),
    legends: text('#symbols .legend-indicators'),
    cells: [...document.querySelectorAll('#trades tbody tr')].map(
      (row) => [...row.cells].map((cell) => cell.textContent)),
    notice: document.querySelector('#notice').textContent,
    noticeShown: !document.querySelector('#notice').hidden,
    images: document.querySelectorAll('img').length,
    pwned: window.pwned ?? null,
    applied: [...window.bandwagonDashboard.client.appliedSeqs],
  };
}"""

# Under the policy: an inline script, an on* attribute, a <style> and eval, each injected into the
# page's own context (Playwright's evaluate itself is not subject to the page's CSP; what it
# inserts, and eval called from it, are).
INJECT = """async () => {
  const violations = [];
  const note = (event) => violations.push(event.effectiveDirective);
  document.addEventListener('securitypolicyviolation', note);
  const script = document.createElement('script');
  script.textContent = 'window.injected = "inline script";';
  document.head.append(script);
  const image = new Image();
  image.setAttribute('onload', 'window.injected = "event handler";');
  const loaded = new Promise((resolve) => {
    image.addEventListener('load', () => resolve('load'));
    image.addEventListener('error', () => resolve('error'));
  });
  image.src = 'dashboard/favicon.svg';
  document.body.append(image);
  const imageEvent = await loaded;
  const style = document.createElement('style');
  style.textContent = 'body { visibility: hidden; }';
  document.head.append(style);
  let evaluated;
  try {
    evaluated = eval('"eval ran"');
  } catch (error) {
    evaluated = error.name;
  }
  await new Promise((resolve) => setTimeout(resolve, 300)); // violation events come as tasks
  image.remove();
  script.remove();
  style.remove();
  return {
    injected: window.injected ?? null,
    imageEvent,
    evaluated,
    visibility: getComputedStyle(document.body).visibility,
    violations: [...new Set(violations)].sort(),
  };
}"""


async def check_hostile_page(browser: Any, base: str, bypass_csp: bool, directory: Path) -> None:
    """One page of the stand-in gateway, in a browser context of its own, the page's policy
    enforced or (`bypass_csp`) not."""
    context = await browser.new_context(
        bypass_csp=bypass_csp, viewport={"width": 1280, "height": 1000}
    )
    page = await context.new_page()
    await page.add_init_script(WATCH)
    dialogs: list[str] = []
    problems: list[str] = []
    responses: list[Any] = []

    async def dialog(opened: Any) -> None:
        dialogs.append(opened.message)
        await opened.dismiss()

    def console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("dialog", dialog)
    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("response", lambda response: responses.append(response))

    await page.goto(base + f"#key={STAND_IN_KEY}")
    await wait_for_state(page, "live", 15)
    await page.wait_for_function("document.body.dataset.seq === '11'", timeout=10_000)
    await page.wait_for_selector("#notice:not([hidden])", timeout=10_000)
    assert await page.evaluate("window.bandwagonDashboard.chartsAvailable") is True
    await page.wait_for_function(f"({CANVAS_INK})() >= 100", timeout=10_000)
    await page.wait_for_timeout(300)  # time for anything that would run to run
    name = "dashboard-hostile-no-csp.png" if bypass_csp else "dashboard-hostile.png"
    await screenshot(page, directory, name)

    # nothing ran, nothing was made from the data; then each string shows as its text
    shown = await page.evaluate(SHOWN_TEXT)
    watched = await page.evaluate("window.lockdownWatch")
    assert dialogs == [] and shown["pwned"] is None, (dialogs, watched)
    assert watched == {"violations": [], "inserted": []}, watched
    assert shown["images"] == 0 and problems == [], (shown, problems)
    assert shown["applied"] == [11], shown["applied"]
    assert shown["exchange"] == f"{XSS_FLAG} on {XSS}"
    assert shown["products"] == shown["cardProducts"] == [XSS, XSS_FLAG]
    assert shown["signals"] == [XSS, XSS]
    assert all(price.endswith(f" {XSS}") for price in shown["prices"]), shown
    assert shown["strategies"] == [XSS, XSS]
    assert all(item.startswith(f"{XSS_FLAG} ") for item in shown["readouts"]), shown
    assert shown["readouts"] and all(XSS_FLAG in text for text in shown["legends"])
    assert len(shown["cells"]) == 2, shown["cells"]
    for row in shown["cells"]:
        assert row[1] == XSS and row[2] == f"sell (open {XSS_FLAG})", row
    assert sorted(row[3] for row in shown["cells"]) == sorted([XSS, XSS_FLAG])
    assert shown["noticeShown"] and shown["notice"] == f"bad_request: {XSS}"

    paths = await assert_responses_locked_down(responses, base[:-1])
    assert {"/", "/dashboard/js/main.js", "/dashboard/js/view.js"} <= paths, paths
    assert "/dashboard/vendor/lightweight-charts.standalone.production.mjs" in paths

    if not bypass_csp:
        refused = await page.evaluate(INJECT)
        assert refused == {
            "injected": None,
            "imageEvent": "load",  # the image itself is the page's own: allowed
            "evaluated": "EvalError",
            "visibility": "visible",
            "violations": ["script-src", "script-src-attr", "script-src-elem", "style-src-elem"],
        }, refused
        assert await page.is_visible("#bot")
    await context.close()


@pytest.mark.timeout(120)
async def test_the_locked_down_page_shows_hostile_strings_as_text_and_runs_nothing(
    tmp_path: Path,
) -> None:
    """Issue 19: the page from a stand-in gateway whose `init`, refresh and error carry HTML in
    every string field the page shows (exchange, product ids, currency, signal, the strategy's
    and an indicator's names, a fill's action, order type and side, an error message): under
    the policy, and again with the policy bypassed (the page alone must hold: it builds no
    HTML from data), each shows as its text, no image or script is made, no dialog opens, the
    flag the payload would set stays unset. Under the policy the page draws without a
    violation, every response carries the headers, and an injected inline script, event
    handler, style and eval are refused and reported."""
    executable = require_browser()
    from playwright.async_api import async_playwright

    async with stand_in_gateway(hostile_replies()) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            for bypass_csp in (False, True):
                await check_hostile_page(browser, base, bypass_csp, tmp_path)
        finally:
            await browser.close()
