"""One node lost: Redis and the accounting worker die together, and Redis comes back without its
last second of acknowledged writes (issue 14, SPEC 2.1 rule 19).

The host crash of `test_redis_restart.py` (SIGKILL, the AOF cut back by what `appendfsync
everysec` had not fsynced), but the accounting process goes in the same instant, so no process
remembers what was published in that second: the accounting that starts again knows only what
Redis kept. Refreshes a client already applied are gone from Redis and would be recomputed with
other contents under the same seqs. Rule 19 forbids that: the bot must get a new epoch before
anything more of it is published.

Checked, as a client written from SPEC 2.1 rule 8 and a direct SUBSCRIBE on the bot's channel
saw it: no (epoch, seq) ever came with two different texts; the client that had applied the lost
seqs ends on a new epoch, at the bot's final seq, holding exactly what a fresh `init` holds
(rule 12); the refresh log is whole in the new epoch; and the final state is still exactly
`bandwagon backtest`'s (SPEC 4.1 rule 12: a lost second is recomputed, not corrupted).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.config import load_bots
from libs.core.market import Kline
from libs.exchange.market_files import read_market_file
from libs.store import keys
from libs.store.published import Snapshot, read_snapshot
from tests.e2e.services import Deployment
from tests.e2e.test_redis_restart import (
    API_KEY,
    BOT,
    BOTS_YAML,
    KLINES,
    KLINES_EVENT_S,
    PRODUCT_ID,
    Client,
    crash_losing_the_last_second,
    reference,
    settle,
    shows,
)
from tests.e2e.test_redis_restart import check_final_state_is_the_backtest as check_backtest
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer, free_port, new_passwords

FAULT_AFTER_S = 2.0  # into the replay, once refreshes flow
POLL_S = 0.1
SERVICES = ("accounting", "gateway", "strategy", "ingest")

pytestmark = pytest.mark.timeout(90)

Texts = dict[tuple[str, int], set[str]]  # (epoch, seq) -> every text seen under it


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Not the session's server: this one is killed. AOF `everysec`, the default durability."""
    server = RedisServer(
        tmp_path / "redis", port=free_port(), appendfsync="everysec", passwords=new_passwords()
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def deployment(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    config = tmp_path / "bots.yaml"
    config.write_text(BOTS_YAML)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    deployment = Deployment(own_redis.url, config, log_dir, API_KEY, passwords=own_redis.passwords)
    yield deployment
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), (codes, str(log_dir))


def record(texts: Texts, text: str) -> None:
    message = orjson.loads(text)
    if message["action"] == "refresh":
        texts.setdefault((message["epoch"], message["seq"]), set()).add(text)


@dataclass
class RecordingClient(Client):
    """The client of SPEC 2.1 rule 8, keeping every refresh text it received, applied or not."""

    texts: Texts = field(default_factory=dict)

    async def on_text(self, text: str) -> None:
        record(self.texts, text)
        await super().on_text(text)


async def subscribe(url: str, texts: Texts, stop: asyncio.Event) -> None:
    """Every text PUBLISHed on the bot's channel while Redis is up, subscribing again after it
    comes back."""
    while not stop.is_set():
        try:
            async with Redis.from_url(url, decode_responses=True) as redis:
                pubsub = redis.pubsub()
                await pubsub.subscribe(keys.refresh_channel(BOT))
                try:
                    while not stop.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=POLL_S
                        )
                        if message is not None:
                            record(texts, str(message["data"]))
                finally:
                    await pubsub.aclose()
        except (RedisError, OSError):
            await asyncio.sleep(POLL_S)


async def meta_history(url: str) -> tuple[str, int]:
    """(epoch, seq) as Redis holds them."""
    async with Redis.from_url(url, decode_responses=True) as redis:
        epoch, seq = await redis.hmget(keys.meta(BOT), ["epoch", "seq"])
    return str(epoch), int(seq)


async def fresh_init(url: str) -> dict[str, Any]:
    async with websockets.connect(url, max_size=2**26) as ws:
        await ws.send(orjson.dumps({"action": "init", "apiKey": API_KEY}).decode())
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["action"] == "init", message
    return message


async def test_redis_and_accounting_lost_together_start_a_new_epoch_and_reuse_no_seq(
    deployment: Deployment, own_redis: RedisServer, tmp_path: Path
) -> None:
    bot = load_bots(deployment.config_path).bots[0]
    *_, (_, last_update) = read_market_file(KLINES, bot.period_ms)
    speed = KLINES_EVENT_S / 10  # a 10 s replay: the fault falls early in it

    deployment.start("accounting")
    deployment.start("gateway")
    deployment.wait_ready("accounting", "gateway")
    published: Texts = {}
    stop = asyncio.Event()
    subscriber = asyncio.create_task(subscribe(own_redis.url, published, stop))
    async with websockets.connect(deployment.ws_url, max_size=2**26) as ws:
        client = RecordingClient(ws)
        await client.init(resume=False)
        await client.on_text(str(await asyncio.wait_for(ws.recv(), 10)))
        assert client.seq == 1, client.state
        reader = asyncio.create_task(client.run(stop))
        try:
            deployment.start("strategy")
            deployment.start("ingest", "--source=replay", f"--replay={PRODUCT_ID}={KLINES}",
                             f"--speed={speed}")  # fmt: skip
            await asyncio.to_thread(deployment.wait_ready, "strategy", "ingest")
            await asyncio.sleep(FAULT_AFTER_S)  # into the replay, which starts once ingest runs
            epoch_before = client.epoch
            assert client.seq > 1, "refreshes flow before the fault"

            # one node lost: accounting and Redis killed in the same instant, the AOF's
            # unsynced second gone; then both start again
            accounting = deployment.services["accounting"].process
            await crash_losing_the_last_second(own_redis, with_it=accounting.kill)
            assert accounting.wait() != 0
            kept_epoch, kept_seq = await meta_history(own_redis.url)
            seen_seq = max(seq for epoch, seq in client.texts if epoch == epoch_before)
            assert kept_epoch == epoch_before and kept_seq < seen_seq, (
                f"the case needs refreshes the client saw and Redis lost: Redis kept seq "
                f"{kept_seq}, the client saw {seen_seq}"
            )
            deployment.start("accounting")
            await asyncio.to_thread(deployment.wait_ready, *SERVICES)

            snapshot = await converged(own_redis, client, last_update.kline)
            init = await fresh_init(deployment.ws_url)
        finally:
            stop.set()
            await asyncio.gather(reader, subscriber)
        assert client.closed is None, f"the websocket closed: {client.closed!r}"

    # never one seq with two contents under one epoch, on the channel or on the websocket
    seen: Texts = {}
    for texts in (published, client.texts):
        for key, values in texts.items():
            seen.setdefault(key, set()).update(values)
    reused = {key: len(values) for key, values in seen.items() if len(values) > 1}
    assert not reused, f"seqs published twice with different contents: {sorted(reused)[:5]}"

    # a new epoch, which the client re-inited onto with a full `init` (its `since` names an
    # epoch that is gone), ending where a fresh `init` puts a client (rules 8 and 12)
    assert snapshot.epoch != epoch_before, "a new epoch after the loss"
    assert "init" in client.replies, client.replies
    assert (client.epoch, client.seq) == (snapshot.epoch, snapshot.seq)
    assert (init["epoch"], init["seq"]) == (snapshot.epoch, snapshot.seq)
    assert orjson.loads(orjson.dumps(client.state)) == init

    # the log is whole in the new epoch, each entry the text that was published under its seq
    async with Redis.from_url(own_redis.url, decode_responses=True) as redis:
        log = await redis.xrange(keys.refresh_log(BOT))
    assert [entry_id for entry_id, _ in log] == [f"{seq}-0" for seq in range(1, snapshot.seq + 1)]
    for seq, (_, fields) in enumerate(log, start=1):
        assert seen.get((snapshot.epoch, seq), {fields["msg"]}) == {fields["msg"]}

    check_backtest(snapshot, reference(deployment.config_path, tmp_path / "backtest.json"))
    for service in deployment.services.values():
        assert service.process.poll() is None, f"{service.name} exited; see {service.log_path}"
        assert "Traceback" not in service.log(), f"{service.name} crashed: {service.log_path}"
    accounting_log = deployment.services["accounting"].log()
    assert "state lost" in accounting_log and snapshot.epoch in accounting_log


async def converged(server: RedisServer, client: RecordingClient, last_kline: Kline) -> Snapshot:
    """The snapshot once the file's last update is published and the client holds it."""
    await settle(server, None, last_kline)
    snapshot: Snapshot | None = None  # the last one read, for the failure's message

    async def holds_it(redis: Redis) -> Snapshot | None:
        nonlocal snapshot
        snapshot = await read_snapshot(redis, BOT)
        if shows(snapshot, last_kline) and (
            client.epoch,
            client.seq,
            client.awaiting_reply,
        ) == (snapshot.epoch, snapshot.seq, False):
            return snapshot
        return None

    def state() -> str:
        redis_at = snapshot and f"{snapshot.epoch}/{snapshot.seq}"
        return f"the client at Redis's seq: {client.epoch}/{client.seq}, Redis at {redis_at}"

    async with Redis.from_url(server.url, decode_responses=True) as redis:
        return await eventually(lambda: holds_it(redis), timeout_s=30, poll_s=POLL_S, what=state)
