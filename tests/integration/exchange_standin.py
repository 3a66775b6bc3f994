"""A local stand-in for Binance's public spot API: what CCXT's `binance` calls for markets,
klines and aggregate trades, over REST and websocket, on 127.0.0.1 (no test reaches the internet).

Response shapes follow Binance's documented API (and the examples CCXT's binance.py parses):
`GET /api/v3/exchangeInfo`, `GET /api/v3/klines`, `GET /api/v3/aggTrades`, and the market stream
`/stream/ws/<n>` answering `SUBSCRIBE` with `{"result": null, "id": N}` and then pushing
`aggTrade` events. Tests inject faults: an HTTP status for the next requests of a path (429),
a raw body for the next klines request (malformed or out-of-order candles), a dropped socket.

Point CCXT at it with `standin.urls()` merged into `exchange.urls['api']`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.support.polling import eventually

MINUTE = 60_000


@dataclass
class Fault:
    status: int
    count: int
    body: str = '{"code":-1003,"msg":"Too many requests."}'


@dataclass
class StandinMarket:
    base: str
    quote: str
    tick_size: str = "0.01000000"
    step_size: str = "0.00010000"
    min_qty: str = "0.00010000"
    status: str = "TRADING"

    @property
    def market_id(self) -> str:
        return self.base + self.quote


@dataclass
class StandinExchange:
    """The exchange's data and the requests it saw; `start()` serves it on a free port."""

    markets: list[StandinMarket] = field(default_factory=list)
    klines: dict[str, dict[int, list[Any]]] = field(default_factory=lambda: defaultdict(dict))
    trades: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=lambda: defaultdict(list))
    raw_klines: list[Any] = field(default_factory=list)
    now_ms: int = 0
    klines_page_max: int = 1000
    subscribe_count: int = 0
    port: int = 0
    _sockets: list[tuple[web.WebSocketResponse, set[str]]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    # --- data --------------------------------------------------------------------------------

    def add_kline(
        self, market_id: str, open_ms: int, o: str, h: str, lo: str, c: str, v: str
    ) -> None:
        self.klines[market_id][open_ms] = [open_ms, o, h, lo, c, v, open_ms + MINUTE - 1]

    def add_trade(
        self, market_id: str, trade_id: int, time_ms: int, price: str, amount: str
    ) -> None:
        trade = {
            "a": trade_id,
            "p": price,
            "q": amount,
            "f": trade_id,
            "l": trade_id,
            "T": time_ms,
            "m": False,
            "M": True,
        }
        self.trades[market_id].append(trade)

    async def push_trade(
        self, market_id: str, trade_id: int, time_ms: int, price: str, amount: str
    ) -> None:
        """A trade happens: REST sees it, and every socket subscribed to the market gets it."""
        self.add_trade(market_id, trade_id, time_ms, price, amount)
        event = {
            "e": "aggTrade",
            "E": time_ms,
            "s": market_id,
            "a": trade_id,
            "p": price,
            "q": amount,
            "f": trade_id,
            "l": trade_id,
            "T": time_ms,
            "m": False,
            "M": True,
        }
        for socket, streams in list(self._sockets):
            if f"{market_id.lower()}@aggtrade" in streams and not socket.closed:
                await socket.send_str(json.dumps(event))

    async def drop_sockets(self) -> None:
        """The exchange closes every market-stream connection (as at a maintenance restart)."""
        for socket, _ in list(self._sockets):
            await socket.close(code=1001, message=b"going away")
        self._sockets.clear()

    def fail_next(self, path: str, status: int, count: int = 1) -> None:
        self.faults[path].append(Fault(status, count))

    def paths(self, path: str) -> list[dict[str, str]]:
        return [query for seen, query in self.requests if seen == path]

    def urls(self) -> dict[str, Any]:
        base = f"http://127.0.0.1:{self.port}"
        return {"public": f"{base}/api/v3", "ws": {"spot": f"ws://127.0.0.1:{self.port}/stream/ws"}}

    # --- serving -------------------------------------------------------------------------------

    async def start(self) -> StandinExchange:
        app = web.Application()
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/api/v3/aggTrades", self._agg_trades)
        app.router.add_get("/stream/ws/{index}", self._stream)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self.drop_sockets()
        if self._runner is not None:
            await self._runner.cleanup()

    def _fault(self, path: str) -> web.Response | None:
        queue = self.faults.get(path)
        if not queue:
            return None
        fault = queue[0]
        fault.count -= 1
        if fault.count <= 0:
            queue.pop(0)
        return web.Response(status=fault.status, text=fault.body, content_type="application/json")

    def _seen(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query)))
        return self._fault(request.path)

    async def _exchange_info(self, request: web.Request) -> web.Response:
        if (fault := self._seen(request)) is not None:
            return fault
        symbols = [_symbol_info(market) for market in self.markets]
        body = {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": symbols,
        }
        return web.json_response(body)

    async def _klines(self, request: web.Request) -> web.Response:
        if (fault := self._seen(request)) is not None:
            return fault
        if self.raw_klines:
            return web.json_response(self.raw_klines.pop(0))
        query = request.query
        rows = self.klines.get(query["symbol"], {})
        start = int(query.get("startTime", 0))
        end = int(query.get("endTime", 2**62))
        limit = min(int(query.get("limit", 500)), self.klines_page_max)
        chosen = [rows[t] for t in sorted(rows) if start <= t <= end and t <= self.now_ms]
        if "startTime" not in query:
            chosen = chosen[-limit:]
        return web.json_response(chosen[:limit])

    async def _agg_trades(self, request: web.Request) -> web.Response:
        if (fault := self._seen(request)) is not None:
            return fault
        query = request.query
        trades = sorted(self.trades.get(query["symbol"], []), key=lambda t: (t["T"], t["a"]))
        limit = min(int(query.get("limit", 500)), 1000)
        if "startTime" in query:
            start, end = int(query["startTime"]), int(query.get("endTime", 2**62))
            chosen = [t for t in trades if start <= t["T"] <= end]
            return web.json_response(chosen[:limit])
        return web.json_response(trades[-limit:])

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        streams: set[str] = set()
        entry = (socket, streams)
        self._sockets.append(entry)
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(message.data)
                if payload.get("method") == "SUBSCRIBE":
                    streams.update(name.lower() for name in payload["params"])
                    self.subscribe_count += 1
                    await socket.send_str(json.dumps({"result": None, "id": payload["id"]}))
        finally:
            if entry in self._sockets:
                self._sockets.remove(entry)
        return socket

    async def wait_subscribed(self, count: int, timeout_s: float = 10.0) -> None:
        await eventually(
            lambda: self.subscribe_count >= count,
            timeout_s=timeout_s,
            poll_s=0.01,
            what=lambda: f"{count} SUBSCRIBE requests, {self.subscribe_count} so far",
        )


def _symbol_info(market: StandinMarket) -> dict[str, Any]:
    """One entry of `exchangeInfo.symbols` as Binance spot sends it (trimmed to what CCXT reads)."""
    return {
        "symbol": market.market_id,
        "status": market.status,
        "baseAsset": market.base,
        "baseAssetPrecision": 8,
        "quoteAsset": market.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": market.tick_size,
                "maxPrice": "1000000.00000000",
                "tickSize": market.tick_size,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": market.min_qty,
                "maxQty": "9000.00000000",
                "stepSize": market.step_size,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }
