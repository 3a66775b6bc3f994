"""Two bots with different keys in one deployment never share a byte (issue 5, point 6).

Bot `alpha` trades ALT-BTC (klines) on `binance` data, bot `beta` XRP-ETH (trades) on `kraken`
data; both are replayed by one ingest, traded by one strategy, accounted by one accounting and
served by one gateway. Checked at two levels while both bots publish:

- Redis: each bot's keys and refresh channel are its own (libs/store/keys.py, hash tag `{bot}`); a
  subscriber of alpha's channel, one of beta's and one of the gateway's pattern see, on each
  channel, only that bot's refreshes (its epoch, symbols, exchange, capital), seq by seq.
- Sockets: a client of alpha receives nothing that mentions beta (id, symbols, exchange, epoch,
  key), whatever it asks: extra fields naming beta, beta's epoch in a resume, `refresh` with
  beta's key. Alpha's refreshes on the socket are byte for byte those on alpha's channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from libs.config import api_key_hash
from libs.store import keys
from tests.e2e.services import REPO, Deployment, bot_seq, log_texts

DATA = REPO / "tests" / "data"
ALPHA_KEY = "alpha-isolation-key-0123456789"
API_KEY = ALPHA_KEY  # the deployment's BOT_API_KEY
BETA_KEY = "beta-isolation-key-9876543210"
BOTS_YAML = """\
bots:
  - id: alpha
    api_key_env: BOT_API_KEY
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    strategy: {order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 120000}
    symbols:
      - {product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 20, isolated: true}
  - id: beta
    api_key_env: BETA_API_KEY
    exchange: kraken
    start_capital: 2.5
    refresh_interval_ms: 100
    strategy: {order_type: taker, mode: long, buy_pct: 30}
    symbols:
      - {product_id: XRP-ETH, min_size: "0.1", price_decimals: 8, leverage: 2, isolated: false}
"""
SPEED = "1500"  # beta's 333 event-minutes of trades last 13 s: both bots publish throughout


class Bot:
    def __init__(self, bot_id: str, key: str, product_id: str, exchange: str, capital: float):
        self.id, self.key, self.product_id = bot_id, key, product_id
        self.exchange, self.capital = exchange, capital
        self.epoch = ""

    def markers(self) -> list[str]:
        """Strings only this bot's data contains: what the other bot's client must never see."""
        asset, currency = self.product_id.split("-")
        return [self.id, self.key, self.product_id, asset, currency, self.exchange, self.epoch]

    def check(self, text: str) -> None:
        """One message is wholly this bot's: its epoch, symbols, exchange and capital."""
        message = orjson.loads(text)
        assert message["epoch"] == self.epoch, text[:200]
        body = message["data"] if message["action"] == "refresh" else message
        symbols = body["symbols"]
        assert [s["product_id"] for s in symbols] == [self.product_id], text[:200]
        assert all(s["normalized"] == f"{self.exchange}.{self.product_id}" for s in symbols)
        assert body["status"]["exchange"] == self.exchange
        assert body["status"]["startCapital"] == self.capital


ALPHA = Bot("alpha", ALPHA_KEY, "ALT-BTC", "binance", 1.0)
BETA = Bot("beta", BETA_KEY, "XRP-ETH", "kraken", 2.5)

pytestmark = pytest.mark.timeout(90)


def client(url: str) -> connect:
    return connect(url, max_size=2**26, open_timeout=10, close_timeout=5)


async def request(ws: ClientConnection, **fields: object) -> None:
    await ws.send(orjson.dumps(fields).decode())


async def record(url: str, key: str, stop: asyncio.Event, frames: list[str]) -> None:
    """A plain client: `init`, then every frame it receives, until `stop`."""
    async with client(url) as ws:
        await request(ws, action="init", apiKey=key)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                text = await asyncio.wait_for(ws.recv(), 0.3)
                assert isinstance(text, str)
                frames.append(text)


async def listen(redis: Redis, stop: asyncio.Event, got: list[tuple[str, str]], **how: str) -> None:
    """(channel, message) of every refresh published on `channel` or `pattern`, until `stop`."""
    pubsub = redis.pubsub()
    if "pattern" in how:
        await pubsub.psubscribe(how["pattern"])
    else:
        await pubsub.subscribe(how["channel"])
    try:
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)
            if message is not None:
                got.append((message["channel"], message["data"]))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def probe(url: str, frames: list[str], beta_seq: int) -> None:
    """Everything a holder of alpha's key might try in order to reach beta's data."""
    async with client(url) as ws:
        naming_beta = {"bot": "beta", "botId": "beta", "id": "beta", "symbol": BETA.product_id}
        await request(ws, action="init", apiKey=ALPHA_KEY, **naming_beta)
        frames.append(str(await ws.recv()))
        await request(ws, action="init", apiKey=ALPHA_KEY, since=beta_seq, epoch=BETA.epoch)
        frames.append(str(await ws.recv()))  # beta's epoch is not alpha's: a full init of alpha
        await request(ws, action="refresh", apiKey=ALPHA_KEY, bot="beta", symbol="XRP-ETH")
        frames.append(str(await ws.recv()))
        await request(ws, action="init", apiKey=BETA_KEY, since=0)  # on alpha's connection
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(str(await asyncio.wait_for(ws.recv(), 10)))
        assert (ws.close_code, ws.close_reason) == (4401, "unauthorized")
    async with client(url) as ws:
        await request(ws, action="init", apiKey=ALPHA_KEY)
        frames.append(str(await ws.recv()))
        await request(ws, action="refresh", apiKey=BETA_KEY)
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(str(await asyncio.wait_for(ws.recv(), 10)))
        assert (ws.close_code, ws.close_reason) == (4401, "unauthorized")
    async with client(url) as ws:  # duplicate names: the last wins, and that is alpha's key
        await ws.send(f'{{"action":"init","apiKey":"{BETA_KEY}","apiKey":"{ALPHA_KEY}"}}')
        frames.append(str(await ws.recv()))


async def test_two_bots_never_share_a_byte(deployment: Deployment, redis: Redis) -> None:
    for bot in (ALPHA, BETA):  # the channel and every key of a bot carry its own hash tag
        assert keys.refresh_channel(bot.id) == f"bw:{{{bot.id}}}:refresh"
        assert keys.bot_from_refresh_channel(keys.refresh_channel(bot.id)) == bot.id
    assert keys.refresh_channel("alpha") != keys.refresh_channel("beta")
    assert keys.refresh_log("alpha") != keys.refresh_log("beta")

    env = {"BETA_API_KEY": BETA_KEY}
    deployment.start("accounting", **env)
    deployment.start("strategy", **env)
    deployment.start("gateway", **env)
    deployment.wait_ready("accounting", "strategy", "gateway")
    assert await redis.hgetall(keys.api_keys()) == {
        api_key_hash(ALPHA_KEY): "alpha",
        api_key_hash(BETA_KEY): "beta",
    }
    for bot in (ALPHA, BETA):
        epoch = await redis.hget(keys.meta(bot.id), "epoch")
        assert isinstance(epoch, str)
        bot.epoch = epoch
    assert ALPHA.epoch != BETA.epoch

    stop = asyncio.Event()
    direct: dict[str, list[tuple[str, str]]] = {"alpha": [], "beta": []}
    patterned: list[tuple[str, str]] = []
    alpha_frames: list[str] = []
    beta_frames: list[str] = []
    url = deployment.ws_url
    tasks = [
        asyncio.create_task(
            listen(redis, stop, direct["alpha"], channel=keys.refresh_channel("alpha"))
        ),
        asyncio.create_task(
            listen(redis, stop, direct["beta"], channel=keys.refresh_channel("beta"))
        ),
        asyncio.create_task(listen(redis, stop, patterned, pattern=keys.REFRESH_CHANNEL_PATTERN)),
        asyncio.create_task(record(url, ALPHA_KEY, stop, alpha_frames)),
        asyncio.create_task(record(url, BETA_KEY, stop, beta_frames)),
    ]
    await asyncio.sleep(0.5)  # subscribed before the first market data
    replays = [f"--replay=ALT-BTC={DATA / 'klines-1m-3000.csv'}"]
    replays.append(f"--replay=XRP-ETH={DATA / 'trades-2000.csv'}")
    deployment.start("ingest", "--source=replay", *replays, f"--speed={SPEED}", **env)
    deployment.wait_ready("ingest")
    for _ in range(300):  # both bots have published a while
        if min(await bot_seq(redis, "alpha"), await bot_seq(redis, "beta")) >= 30:
            break
        await asyncio.sleep(0.1)
    probe_frames: list[str] = []
    await probe(url, probe_frames, await bot_seq(redis, "beta"))
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)

    # Redis: each channel carries its own bot's refreshes only, seq by seq, the same to a
    # subscriber of the channel and to one of the pattern
    by_channel: dict[str, list[str]] = {}
    for channel, text in patterned:
        by_channel.setdefault(channel, []).append(text)
    assert set(by_channel) == {keys.refresh_channel("alpha"), keys.refresh_channel("beta")}
    for bot, other in ((ALPHA, BETA), (BETA, ALPHA)):
        channel = keys.refresh_channel(bot.id)
        assert [c for c, _ in direct[bot.id]] == [channel] * len(direct[bot.id])
        texts = [text for _, text in direct[bot.id]]
        common = min(len(texts), len(by_channel[channel]))  # they stopped at slightly
        assert common >= 20 and texts[:common] == by_channel[channel][:common]  # other times
        seqs = [orjson.loads(text)["seq"] for text in texts]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "one bot's own seq"
        for text in texts:
            bot.check(text)
            for marker in other.markers():
                assert marker not in text, (bot.id, marker)

    # sockets: alpha's client sees alpha only, whatever it asked; beta's client sees beta's data
    alpha_refreshes = [t for t in alpha_frames if orjson.loads(t)["action"] == "refresh"]
    assert len(alpha_refreshes) >= 20
    channel_texts = set(by_channel[keys.refresh_channel("alpha")])
    heard = max(orjson.loads(text)["seq"] for text in channel_texts)
    unheard = [
        (orjson.loads(text)["seq"], text[:120])
        for text in alpha_refreshes
        if text not in channel_texts and orjson.loads(text)["seq"] <= heard
    ]
    # the client and the channel's listener stop at slightly different times: a refresh after
    # the listener's last one may reach the client only; any other must be the published bytes
    assert unheard == [], f"forwarded byte for byte (listener heard up to seq {heard})"
    codes: list[str] = []
    for text in alpha_frames + probe_frames:
        message: dict[str, Any] = orjson.loads(text)
        if message["action"] == "error":
            codes.append(message["code"])
        elif message["action"] != "resume":
            ALPHA.check(text)
        for marker in BETA.markers():
            assert marker not in text, marker
    assert codes == ["unauthorized", "unauthorized"]
    assert [orjson.loads(t)["action"] for t in probe_frames].count("init") == 4
    assert any(BETA.product_id in text for text in beta_frames)
    for text in beta_frames:
        BETA.check(text)
        for marker in ALPHA.markers():
            assert marker not in text, marker

    codes_by_service = deployment.stop_all()
    assert all(code == 0 for code in codes_by_service.values()), codes_by_service
    for name, text in log_texts(deployment.log_dir).items():
        assert ALPHA_KEY not in text and BETA_KEY not in text, f"a key in {name}"
