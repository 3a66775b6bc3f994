"""The hostile-input battery of SPEC section 5 against real processes (issue 5, points 5 and 8).

The four services run on a paced replay of real klines. One well-behaved client stays connected
to the gateway the whole time while every kind of bad client of SPEC 2.1 rules 2-4 and 5.1 hits the
same gateway at once: bad frames, bad keys, oversized and invalid UTF-8 frames, a flood, a client
that never authenticates, one that never reads, and one address that fails its key too often.
Each gets exactly the error frame and close SPEC prescribes, and the well-behaved client receives
every refresh seq, in order, with no gap and no second `init`.

The second test opens and drops thousands of connections of every kind (authenticated or not,
cut mid-handshake, reset without a close frame) and checks that the gateway process returns to
its baseline: open file descriptors, asyncio tasks and its connection gauge exactly, resident
memory within a stated bound. Neither test finds an API key in any service's log.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.gateway.server import REDIS_MAX_CONNECTIONS
from tests.e2e.services import (
    REPO,
    Deployment,
    Service,
    Watcher,
    bot_seq,
    log_texts,
    metric_value,
    process_fds,
    process_rss_kib,
    process_sockets_on_port,
    process_sockets_to_port,
    scrape_metrics,
    steady_tasks,
)
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer

BOT = "hostile"
API_KEY = "hostile-e2e-key-0123456789abcdef"
WRONG_KEY = "wrong-e2e-key-0123456789abcdef"
OVERSIZED_KEY = "oversized-e2e-key-" + "x" * 300
KLINES = REPO / "tests" / "data" / "klines-1m-3000.csv"
SPEED = "3000"  # 3000 klines in 60 s: about ten refreshes a second while the battery runs
AUTH_TIMEOUT_S = 4.0
SEND_QUEUE = 16
SEND_STALL_S = 30.0  # time the never-reader has to read its close frame before an abort
NEVER_READER_INITS = 50
MAX_MESSAGE_BYTES = 65536  # SPEC 5.1 rule 1, the default
RECV_S = 10.0

BOTS_YAML = f"""\
bots:
  - id: {BOT}
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    kline_history: {{kline_history}}
    strategy: {{{{order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 120000}}}}
    symbols:
      - {{{{product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 20,
           isolated: true}}}}
"""

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def make_deployment(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> AsyncIterator[Callable[[int], Deployment]]:
    made: list[Deployment] = []

    def make(kline_history: int) -> Deployment:
        config = tmp_path / "bots.yaml"
        config.write_text(BOTS_YAML.format(kline_history=kline_history))
        deployment = Deployment(
            redis_server.url, config, tmp_path, API_KEY, passwords=redis_server.passwords
        )
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        codes = deployment.stop_all()
        assert all(code == 0 for code in codes.values()), codes


def start_pipeline(deployment: Deployment, **gateway_env: str) -> Service:
    """Accounting, strategy and the gateway, ready; ingest is started by the test."""
    deployment.start("accounting")
    deployment.start("strategy")
    gateway = deployment.start("gateway", **gateway_env)
    deployment.wait_ready("accounting", "strategy", "gateway")
    return gateway


def frame(**fields: object) -> str:
    return orjson.dumps(fields).decode()


def client(url: str, **options: Any) -> connect:
    return connect(url, max_size=2**26, open_timeout=10, close_timeout=5, **options)


async def expect_error(ws: ClientConnection, code: str) -> None:
    """Exactly `{"action":"error","code":C,"message":M}`, M at most 200 characters and free of
    any key (SPEC 2.1 rule 3); refreshes that arrive first (after an `init`) are skipped."""
    while True:
        text = await asyncio.wait_for(ws.recv(), RECV_S)
        assert isinstance(text, str)
        message = orjson.loads(text)
        if message["action"] != "refresh":
            break
    assert message["action"] == "error" and list(message) == ["action", "code", "message"], text
    assert message["code"] == code, text
    assert isinstance(message["message"], str) and len(message["message"]) <= 200
    for key in (API_KEY, WRONG_KEY, OVERSIZED_KEY):
        assert key not in message["message"]


async def expect_close(ws: ClientConnection) -> tuple[int, str]:
    """Read to the server's close: its code and reason (1006 when no close frame came)."""
    async with asyncio.timeout(RECV_S + AUTH_TIMEOUT_S):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    rcvd = ws.close_code
    return (1006 if rcvd is None else rcvd), ws.close_reason or ""


async def expect_init(ws: ClientConnection) -> dict[str, Any]:
    text = await asyncio.wait_for(ws.recv(), RECV_S)
    assert isinstance(text, str)
    message: dict[str, Any] = orjson.loads(text)
    assert message["action"] == "init", text[:200]
    return message


async def expect_live(ws: ClientConnection, after_seq: int) -> None:
    """The connection still works: the next refresh is the one after `after_seq`."""
    while True:
        text = await asyncio.wait_for(ws.recv(), RECV_S)
        assert isinstance(text, str)
        message = orjson.loads(text)
        if message["action"] == "refresh":
            assert message["seq"] == after_seq + 1, "every seq in order on a used connection"
            return


# -- the battery: one coroutine per kind of bad client -------------------------------------------

# Answered with an error, the connection left open and its state unchanged (SPEC 2.1 rule 3).
KEPT_OPEN: list[tuple[str | bytes, str]] = [
    (b"\x00\x01 binary", "bad_json"),
    (b'{"action":"init","apiKey":"' + API_KEY.encode() + b'"}', "bad_json"),  # binary, even so
    ("{nope", "bad_json"),
    ('{"action":"init"} trailing', "bad_json"),
    ('{"action":"init","x":NaN}', "bad_json"),
    ("[1, 2]", "bad_json"),
    ('"init"', "bad_json"),
    ("12", "bad_json"),
    ("null", "bad_json"),
    ('{"a":' * 33 + "1" + "}" * 33, "bad_json"),
    ("{}", "unknown_action"),
    ('{"action":"subscribe","apiKey":"x"}', "unknown_action"),
    ('{"action":7}', "unknown_action"),
    ('{"action":"INIT"}', "unknown_action"),
    (frame(action="init", apiKey=API_KEY, since=-1), "bad_request"),
    (frame(action="init", apiKey=API_KEY, since=1.5), "bad_request"),
    (frame(action="init", apiKey=API_KEY, since="3"), "bad_request"),
    (frame(action="init", apiKey=API_KEY, epoch=12), "bad_request"),
]


async def bad_frames_leave_the_connection_usable(url: str) -> None:
    async with client(url) as ws:
        for data, code in KEPT_OPEN[:12]:  # before init: one burst, inside the 20-frame bucket
            await ws.send(data)
            await expect_error(ws, code)
        await ws.send(frame(action="init", apiKey=API_KEY, unknown=[1, {"x": None}]))
        init = await expect_init(ws)
        seq = init["seq"]
        for data, code in KEPT_OPEN:  # after init, paced under the refill rate of 10/s
            await asyncio.sleep(0.12)
            await ws.send(data)
            await expect_error(ws, code)
        await ws.send(frame(action="refresh", apiKey=API_KEY))  # the connection still answers
        while True:
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), RECV_S))
            if reply["action"] == "refresh" and reply["seq"] >= seq:
                break
        assert reply["epoch"] == init["epoch"]


UNAUTHORIZED: list[tuple[str, ...]] = [
    (frame(action="init"),),
    (frame(action="init", apiKey=""),),
    (frame(action="init", apiKey=12345),),
    (frame(action="init", apiKey=None),),
    (frame(action="init", apiKey=WRONG_KEY),),
    (frame(action="init", apiKey=OVERSIZED_KEY),),
    (frame(action="init", apiKey="k" * 60_000),),  # oversized, yet inside the frame limit
    (frame(action="init", apiKey="ключ-ключ-ключ-ключ"),),
    (frame(action="init", apiKey="has a space in it 0123"),),
    (frame(action="refresh", apiKey=API_KEY),),  # refresh before init
    (frame(action="init", apiKey=API_KEY), frame(action="refresh", apiKey=WRONG_KEY)),
    (frame(action="init", apiKey=API_KEY), frame(action="init", apiKey=WRONG_KEY)),
]


async def bad_keys_get_unauthorized_then_4401(url: str, frames: tuple[str, ...]) -> None:
    async with client(url) as ws:
        for data in frames[:-1]:
            await ws.send(data)
            await expect_init(ws)
        await ws.send(frames[-1])
        await expect_error(ws, "unauthorized")
        assert await expect_close(ws) == (4401, "unauthorized")


async def a_frame_over_the_limit_closes_1009(url: str) -> None:
    prefix = f'{{"action":"init","apiKey":"{API_KEY}","pad":"'
    exact = prefix + "p" * (MAX_MESSAGE_BYTES - len(prefix) - 2) + '"}'
    assert len(exact.encode()) == MAX_MESSAGE_BYTES
    async with client(url) as ws:
        await ws.send(exact)  # at the limit: accepted
        await expect_init(ws)
    async with client(url) as ws:
        await ws.send(exact[:-2] + 'p"}')
        code, _ = await expect_close(ws)
        assert code == 1009
    async with client(url) as ws:  # an unauthenticated client cannot send a big one either
        await ws.send(b"\x00" * (4 * MAX_MESSAGE_BYTES))
        code, _ = await expect_close(ws)
        assert code == 1009


async def invalid_utf8_closes_1007(url: str) -> None:
    async with client(url) as ws:
        await ws.send(b'{"action":"init","apiKey":"\xff\xfe"}', text=True)
        code, _ = await expect_close(ws)
        assert code == 1007


async def a_flood_is_rate_limited_then_1008(url: str) -> None:
    """Every data frame takes a token, text or binary, valid or not (SPEC 5.1 rule 3): a burst of
    60 gets at least the bucket's 20 answers, then `rate_limited` and close 1008."""
    async with client(url) as ws:
        for index in range(60):
            await ws.send(b"binary" if index % 2 else "[]")
        answered = 0
        while True:
            text = await asyncio.wait_for(ws.recv(), RECV_S)
            assert isinstance(text, str)
            code = orjson.loads(text)["code"]
            if code != "bad_json":
                break
            answered += 1
        assert code == "rate_limited"
        assert 20 <= answered < 60
        assert await expect_close(ws) == (1008, "rate_limited")


async def a_silent_client_is_unauthorized_after_the_auth_timeout(url: str, talk: bool) -> None:
    """SPEC 5.1 rule 2: no successful `init` within the timeout, whatever else was sent."""
    async with client(url) as ws:
        opened_s = time.monotonic()
        if talk:
            await ws.send("{}")  # a bad request does not reset the timer
            await expect_error(ws, "unknown_action")
        async with asyncio.timeout(AUTH_TIMEOUT_S + RECV_S):
            await expect_error(ws, "unauthorized")
        assert time.monotonic() - opened_s >= AUTH_TIMEOUT_S / 2  # not before the timeout
        assert await expect_close(ws) == (4401, "unauthorized")


async def a_client_that_never_reads_is_closed_slow_consumer(url: str, port: int) -> None:
    """SPEC 5.1 rule 5: a client on a small window that keeps asking for `init` (each a large
    snapshot) and never reads. The kernel's buffers fill, then the bounded queue; the gateway
    closes 1013 `slow_consumer`, which the client finds once it reads at last."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    async with client(url, sock=sock, max_queue=1) as ws:
        for _ in range(NEVER_READER_INITS):  # paced under the 10/s refill: never rate limited
            await ws.send(frame(action="init", apiKey=API_KEY))
            await asyncio.sleep(0.14)
        inits = delivered = 0
        next_seq = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), RECV_S))
                if message["action"] == "init":
                    inits += 1
                else:
                    assert message["action"] == "refresh" and message["seq"] == next_seq
                    delivered += 1
                next_seq = message["seq"] + 1
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "slow_consumer")
        assert 1 <= inits < NEVER_READER_INITS, "cut before its requests were all answered"


async def failed_keys_block_one_address(url: str) -> None:
    """SPEC 5.1 rule 4: after more than 20 `unauthorized` answers to one address within 60 s,
    its `init` gets `rate_limited` and 1008, even with the right key; another address does not."""
    blocked, other = ("127.0.0.7", 0), ("127.0.0.8", 0)
    for _ in range(21):
        async with client(url, local_addr=blocked) as ws:
            await ws.send(frame(action="init", apiKey=WRONG_KEY))
            await expect_error(ws, "unauthorized")
            assert await expect_close(ws) == (4401, "unauthorized")
    async with client(url, local_addr=blocked) as ws:
        await ws.send(frame(action="init", apiKey=API_KEY))
        await expect_error(ws, "rate_limited")
        assert await expect_close(ws) == (1008, "rate_limited")
    async with client(url, local_addr=other) as ws:
        await ws.send(frame(action="init", apiKey=API_KEY))
        await expect_init(ws)


async def test_the_battery_gets_spec_answers_and_a_good_client_every_seq(
    make_deployment: Callable[[int], Deployment], redis: Redis
) -> None:
    deployment = make_deployment(300)
    gateway = start_pipeline(
        deployment,
        GATEWAY_AUTH_TIMEOUT_S=str(AUTH_TIMEOUT_S),
        GATEWAY_SEND_QUEUE=str(SEND_QUEUE),
        GATEWAY_SEND_STALL_S=str(SEND_STALL_S),
    )
    url = deployment.ws_url
    stop = asyncio.Event()
    watcher = Watcher([url], API_KEY)
    watching = asyncio.create_task(watcher.run(stop))
    deployment.start("ingest", "--source=replay", f"--replay=ALT-BTC={KLINES}", f"--speed={SPEED}")
    deployment.wait_ready("ingest")
    await watcher.reach(40, timeout_s=30)  # refreshes flow, and the init is large by now

    cases: list[Awaitable[None]] = [
        bad_frames_leave_the_connection_usable(url),
        *(bad_keys_get_unauthorized_then_4401(url, frames) for frames in UNAUTHORIZED),
        a_frame_over_the_limit_closes_1009(url),
        invalid_utf8_closes_1007(url),
        a_flood_is_rate_limited_then_1008(url),
        a_silent_client_is_unauthorized_after_the_auth_timeout(url, talk=False),
        a_silent_client_is_unauthorized_after_the_auth_timeout(url, talk=True),
        a_client_that_never_reads_is_closed_slow_consumer(url, deployment.gateway_port),
        failed_keys_block_one_address(url),
    ]
    await asyncio.gather(*cases)

    # the well-behaved client: one init, then every seq, in order, up to the newest
    final_seq = await bot_seq(redis, BOT)
    await watcher.reach(final_seq, timeout_s=20)
    stop.set()
    await watching
    assert watcher.first_seq is not None and watcher.full_inits == [watcher.first_seq]
    assert watcher.received == list(range(watcher.first_seq + 1, watcher.last_seq + 1))
    assert (watcher.gaps, watcher.closes, watcher.errors, watcher.stale) == ([], [], [], 0)
    assert watcher.connects == 1

    metrics = scrape_metrics(gateway)
    for code in ("bad_json", "unknown_action", "bad_request", "unauthorized", "rate_limited"):
        assert metric_value(metrics, "bandwagon_ws_errors_total", code=code) >= 1, code
    for close in ("4401", "1008", "1009", "1007", "1013"):
        assert metric_value(metrics, "bandwagon_ws_closes_total", code=close) >= 1, close
    assert metric_value(metrics, "bandwagon_ws_errors_total", code="unavailable") == 0
    assert metric_value(metrics, "bandwagon_ws_closes_total", code="1011") == 0  # no bug hit

    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    for name, text in log_texts(deployment.log_dir).items():
        for key in (API_KEY, WRONG_KEY, OVERSIZED_KEY, "k" * 64):
            assert key not in text, f"a key in {name}"
        assert "Traceback" not in text and '"level":"ERROR"' not in text, name
    assert API_KEY not in metrics


# -- thousands of connect/disconnect cycles ------------------------------------------------------

CYCLES = int(os.environ.get("BANDWAGON_CYCLES", "2500"))
WARMUP_CYCLES = 300
PARALLEL = 16
RSS_BOUND_KIB = 16 * 1024  # growth allowed over the warmed-up baseline (fragmentation, caches)
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def raw_connection(port: int, payload: bytes, reset: bool) -> None:
    """A TCP client that sends `payload` (part of a handshake, or all of it) and goes away,
    with an RST when `reset`, without reading any answer."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if payload:
        writer.write(payload)
        await writer.drain()
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()
    else:
        writer.close()
        await writer.wait_closed()


async def one_cycle(url: str, port: int, kind: int) -> None:
    """One connection of ten kinds, from the polite to the rude."""
    if kind == 0:  # init, read a refresh, close politely
        async with client(url) as ws:
            await ws.send(frame(action="init", apiKey=API_KEY))
            await expect_init(ws)
            await asyncio.wait_for(ws.recv(), RECV_S)
    elif kind == 1:  # init and leave at once, before the reply
        async with client(url) as ws:
            await ws.send(frame(action="init", apiKey=API_KEY))
    elif kind == 2:  # init, then the TCP connection dies without a close frame
        ws = await client(url)
        await ws.send(frame(action="init", apiKey=API_KEY))
        await expect_init(ws)
        ws.transport.abort()
    elif kind == 3:  # resume, then close
        async with client(url) as ws:
            await ws.send(frame(action="init", apiKey=API_KEY))
            init = await expect_init(ws)
            await ws.send(
                frame(action="init", apiKey=API_KEY, since=init["seq"], epoch=init["epoch"])
            )
            text = await asyncio.wait_for(ws.recv(), RECV_S)
            assert isinstance(text, str) and orjson.loads(text)["action"] in ("resume", "refresh")
    elif kind == 4:  # never authenticates, closes politely
        async with client(url):
            pass
    elif kind == 5:  # a bad frame, its answer, close
        async with client(url) as ws:
            await ws.send("{nope")
            await expect_error(ws, "bad_json")
    elif kind == 6:  # a wrong key from one of many addresses (none reaches the failed-keys limit)
        address = f"127.0.1.{random.randrange(1, 255)}"
        async with client(url, local_addr=(address, 0)) as ws:
            await ws.send(frame(action="init", apiKey=WRONG_KEY))
            await expect_error(ws, "unauthorized")
    elif kind == 7:  # half a handshake, then gone
        await raw_connection(port, UPGRADE[: random.randrange(1, len(UPGRADE) - 1)], reset=False)
    elif kind == 8:  # a whole handshake, then a reset before reading the 101
        await raw_connection(port, UPGRADE, reset=True)
    else:  # connect and reset at once
        await raw_connection(port, b"", reset=True)


async def cycle(url: str, port: int, count: int, seed: int) -> list[int]:
    """`count` connections of random kinds, `PARALLEL` at a time; returns the kinds."""
    rng = random.Random(seed)
    kinds = [rng.randrange(10) for _ in range(count)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for kind in kinds:
        queue.put_nowait(kind)

    async def worker() -> None:
        while not queue.empty():
            await one_cycle(url, port, queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(PARALLEL)))
    return kinds


async def settled(
    gateway: Service, port: int, redis_port: int, timeout_s: float = 30.0
) -> dict[str, float]:
    """Wait until the gateway holds no client connection but the watcher's, then read its
    figures."""
    pid = gateway.process.pid
    left: dict[str, float] = {}  # at the last look, for the failure's message

    def only_the_watcher() -> bool:
        left["connections"] = metric_value(scrape_metrics(gateway), "bandwagon_ws_connections")
        left["sockets"] = process_sockets_on_port(pid, port)
        return left["connections"] == 1 and left["sockets"] == 1

    await eventually(
        only_the_watcher,
        timeout_s=timeout_s,
        poll_s=0.2,
        what=lambda: f"the watcher's connection alone; left: {left}",
    )
    await asyncio.sleep(1.5)  # timers of the last connections (auth timeouts) have fired
    metrics = scrape_metrics(gateway)
    redis_sockets = process_sockets_to_port(pid, redis_port)
    return {
        "fds": process_fds(pid) - redis_sockets,  # the Redis pool may grow, up to its bound
        "redis_sockets": redis_sockets,
        "rss_kib": process_rss_kib(pid),
        "tasks": steady_tasks(gateway),
        "connections": metric_value(metrics, "bandwagon_ws_connections"),
        "sockets": process_sockets_on_port(pid, port),
    }


async def test_thousands_of_connections_come_and_go_without_a_leak(
    make_deployment: Callable[[int], Deployment], redis: Redis
) -> None:
    deployment = make_deployment(50)
    gateway = start_pipeline(deployment, GATEWAY_AUTH_TIMEOUT_S="2")
    url, port = deployment.ws_url, deployment.gateway_port
    deployment.start("ingest", "--source=replay", f"--replay=ALT-BTC={KLINES}", "--speed=600")
    deployment.wait_ready("ingest")
    stop = asyncio.Event()
    watcher = Watcher([url], API_KEY)
    watching = asyncio.create_task(watcher.run(stop))
    await watcher.reach(5, timeout_s=30)

    await cycle(url, port, WARMUP_CYCLES, seed=1)  # the Redis pool and caches grow to size
    redis_port = int(deployment.redis_url.rsplit(":", 1)[1].split("/")[0])
    baseline = await settled(gateway, port, redis_port)
    inits_before = metric_value(scrape_metrics(gateway), "bandwagon_ws_inits_total", mode="full")
    started_s = time.monotonic()
    kinds = await cycle(url, port, CYCLES, seed=2)
    cycling_s = time.monotonic() - started_s
    after = await settled(gateway, port, redis_port)
    inits = metric_value(scrape_metrics(gateway), "bandwagon_ws_inits_total", mode="full")
    assert inits - inits_before >= sum(kinds.count(kind) for kind in (0, 2, 3))

    final_seq = await bot_seq(redis, BOT)
    await watcher.reach(final_seq, timeout_s=20)
    stop.set()
    await watching
    figures = f"baseline {baseline}, after {after}, {CYCLES} cycles in {cycling_s:.1f} s"
    print(figures)  # the figures docs/reliability.md quotes
    # no leak: not one more file; one fewer happens when a pool connection to Redis was being
    # opened at the baseline (an fd, not yet an established socket to Redis)
    assert after["fds"] <= baseline["fds"], figures
    assert after["redis_sockets"] <= REDIS_MAX_CONNECTIONS + 1, figures  # the pool + pub/sub
    assert after["tasks"] == baseline["tasks"], figures
    assert after["connections"] == baseline["connections"] == 1, figures  # the watcher
    assert after["rss_kib"] - baseline["rss_kib"] <= RSS_BOUND_KIB, figures
    assert watcher.full_inits == [watcher.first_seq] and watcher.gaps == [], watcher.report()

    metrics = scrape_metrics(gateway)
    assert metric_value(metrics, "bandwagon_ws_closes_total", code="1011") == 0
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    for name, text in log_texts(deployment.log_dir).items():
        assert API_KEY not in text and WRONG_KEY not in text, f"a key in {name}"
        assert "Traceback" not in text, name
