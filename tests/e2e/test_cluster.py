"""The four services on a real Redis Cluster (SPEC 4.1 rule 13): three masters, three replicas.

Two bots whose `{bot}` slots lie on different masters, each on its own market stream (a third
and fourth slot), replayed through ingest, strategy and accounting with `REDIS_CLUSTER=true`, and
served by three gateways. Clients of the first bot connect to all three gateways, clients of the
second only to the first two. Every client gets every seq once and in order (2.1 rule 7), each
bot ends exactly as its backtest, and the third gateway, which never had a client of the second
bot, received none of its refreshes: they travel on sharded pub/sub, subscribed per bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import RedisError

from libs.errors import StateMissing
from libs.exchange.market_files import read_market_file
from libs.store import keys
from libs.store.client import RedisNodes
from libs.store.published import Snapshot, read_snapshot
from tests.e2e.services import (
    REPO,
    Deployment,
    Watcher,
    backtest_json,
    metric_value,
    scrape_metrics,
    ws_url_of,
)
from tests.support.polling import eventually
from tools.run.redis_cluster import LocalCluster
from tools.run.redis_server import new_passwords

KLINES = REPO / "tests" / "data" / "klines-1m-3000.csv"
API_KEY = "cluster-e2e-key-0123456789abcdef"
SECOND_KEY = "cluster-e2e-key-second-0123456789"
GATEWAYS = ("gateway", "gateway-2", "gateway-3")
CLUSTER_ENV = {"REDIS_CLUSTER": "true", "SECOND_BOT_KEY": SECOND_KEY}

pytestmark = pytest.mark.timeout(180)


def two_bots_on_two_masters() -> tuple[str, str]:
    """Bot ids whose slots different masters serve (the cluster splits slots in thirds)."""
    third = 16384 // 3
    first = "alpha"
    shard = key_slot(keys.meta(first).encode()) // third
    second = next(
        candidate
        for candidate in (f"bravo-{n}" for n in range(100))
        if key_slot(keys.meta(candidate).encode()) // third != shard
    )
    return first, second


def bots_yaml(first: str, second: str) -> str:
    strategy = "{order_type: taker, mode: both, buy_pct: 50, period: 10}"
    return textwrap.dedent(f"""\
        bots:
          - id: {first}
            exchange: binance
            start_capital: 1.0
            refresh_interval_ms: 100
            strategy: {strategy}
            symbols:
              - {{product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 5,
                 isolated: true}}
          - id: {second}
            api_key_env: SECOND_BOT_KEY
            exchange: binance
            start_capital: 1.0
            refresh_interval_ms: 100
            strategy: {strategy}
            symbols:
              - {{product_id: ALT-ETH, min_size: "0.01", price_decimals: 8, leverage: 5,
                 isolated: true}}
        """)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), passwords=new_passwords()).start()
    yield cluster
    cluster.stop()


@pytest.fixture
async def nodes(cluster: LocalCluster) -> AsyncIterator[RedisNodes]:
    nodes = RedisNodes(cluster.url, cluster=True, decode_responses=True)
    await nodes.refresh()
    yield nodes
    await nodes.aclose()


@pytest.fixture
def deployment(cluster: LocalCluster, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(
        cluster.url, tmp_path / "bots.yaml", tmp_path, API_KEY, passwords=cluster.passwords
    )
    yield deployment
    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes


async def settled(nodes: RedisNodes, bot: str) -> Snapshot:
    """The bot's snapshot once it shows the replay's last kline: every update applied."""
    *_, (_, last) = read_market_file(KLINES, 60_000)

    async def done() -> Snapshot | None:
        try:
            snapshot = await read_snapshot(nodes.for_bot(bot), bot)
        except StateMissing:
            return None
        except RedisError:  # its master is gone: read the slot map again
            with contextlib.suppress(RedisError):
                await nodes.refresh()
            return None
        klines = snapshot.symbols[0]["klines"]
        shown = klines and (klines[-1]["time"], klines[-1]["close"]) == (
            last.kline.time_ms,
            last.kline.close,
        )
        return snapshot if shown else None

    return await eventually(done, timeout_s=90, poll_s=0.2, what=f"{bot} at the last update")


def assert_as_backtested(config: Path, snapshots: dict[str, Snapshot], tmp_path: Path) -> None:
    """Each bot's trades and status equal `bandwagon backtest` on the same bots file and data."""
    for bot, snapshot in snapshots.items():
        product_id = snapshot.symbols[0]["product_id"]
        backtest: dict[str, Any] = backtest_json(
            config, bot, [f"--klines={product_id}={KLINES}"], tmp_path / f"{bot}.json"
        )
        live_trades = snapshot.symbols[0]["trades"]
        assert live_trades, f"{bot}: the case must make trades"
        assert backtest["trades"] == live_trades, bot
        assert backtest["status"] == snapshot.status, bot


async def test_two_bots_on_a_cluster_trade_as_their_backtests_through_three_gateways(
    cluster: LocalCluster, nodes: RedisNodes, deployment: Deployment, tmp_path: Path
) -> None:
    first, second = two_bots_on_two_masters()
    assert nodes.for_bot(first) is not nodes.for_bot(second)
    deployment.config_path.write_text(bots_yaml(first, second))
    deployment.start("accounting", **CLUSTER_ENV)
    deployment.start("strategy", **CLUSTER_ENV)
    deployment.start("gateway", **CLUSTER_ENV)
    for name in GATEWAYS[1:]:
        deployment.start("gateway", replica=name, **CLUSTER_ENV)
    deployment.wait_ready("accounting", "strategy", *GATEWAYS, timeout_s=60)
    urls = [ws_url_of(deployment.services[name]) for name in GATEWAYS]

    stop = asyncio.Event()
    watchers: dict[str, list[Watcher]] = {first: [], second: []}
    for index, url in enumerate(urls):
        watchers[first] += [Watcher([url], API_KEY) for _ in range(2)]
        if index < 2:
            watchers[second] += [Watcher([url], SECOND_KEY) for _ in range(2)]
    everyone = [watcher for group in watchers.values() for watcher in group]
    running = [asyncio.create_task(watcher.run(stop)) for watcher in everyone]
    for watcher in everyone:
        await watcher.reach(1, timeout_s=30)

    deployment.start(
        "ingest",
        "--source=replay",
        f"--replay=ALT-BTC={KLINES}",
        f"--replay=ALT-ETH={KLINES}",
        "--speed=6000",
        **CLUSTER_ENV,
    )
    snapshots = {bot: await settled(nodes, bot) for bot in (first, second)}
    for bot, group in watchers.items():
        for watcher in group:
            await watcher.reach(snapshots[bot].seq, timeout_s=30)
    stop.set()
    await asyncio.gather(*running)

    for bot, group in watchers.items():
        final_seq = snapshots[bot].seq
        assert final_seq > 20, "the replay must publish many refreshes"
        for watcher in group:
            report = watcher.report()
            assert watcher.received[: final_seq - 1] == list(range(2, final_seq + 1)), report
            assert watcher.gaps == [] and watcher.errors == [], report

    assert_as_backtested(deployment.config_path, snapshots, tmp_path)

    # sharded pub/sub, subscribed per bot: the third gateway never got the second bot's refreshes
    third = scrape_metrics(deployment.services["gateway-3"])
    assert metric_value(third, "bandwagon_ws_refreshes_received_total", bot_served="false") == 0
    assert metric_value(third, "bandwagon_ws_refreshes_received_total", bot_served="true") > 0


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of the failover test's own: it loses a master."""
    cluster = LocalCluster(tmp_path / "cluster", passwords=new_passwords()).start()
    yield cluster
    cluster.stop()


async def test_a_master_killed_mid_replay_costs_no_order_and_every_client_converges(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    """SPEC 4.1 rule 13 and 2.1 rule 19: SIGKILL the master that owns the first bot's slot while
    the replay runs. Its replica takes over within the node timeout; the services reconnect by
    themselves; the first bot moves to a new epoch (a failover may have lost acknowledged
    writes), the second keeps its own; both end exactly as their backtests, and every client
    ends on its bot's final epoch and seq."""
    cluster = own_cluster
    nodes = RedisNodes(cluster.url, cluster=True, decode_responses=True)
    await nodes.refresh()
    deployment = Deployment(
        cluster.url, tmp_path / "bots.yaml", tmp_path, API_KEY, passwords=cluster.passwords
    )
    try:
        first, second = two_bots_on_two_masters()
        victim = cluster.master_of_slot(key_slot(keys.meta(first).encode()))
        deployment.config_path.write_text(bots_yaml(first, second))
        for name in ("accounting", "strategy", "gateway"):
            deployment.start(name, **CLUSTER_ENV)
        deployment.start("gateway", replica="gateway-2", **CLUSTER_ENV)
        deployment.wait_ready("accounting", "strategy", "gateway", "gateway-2", timeout_s=60)
        urls = [ws_url_of(deployment.services[name]) for name in ("gateway", "gateway-2")]
        stop = asyncio.Event()
        watchers = {
            first: [Watcher(urls[index:] + urls[:index], API_KEY) for index in (0, 1)],
            second: [Watcher(urls[index:] + urls[:index], SECOND_KEY) for index in (0, 1)],
        }
        everyone = [watcher for group in watchers.values() for watcher in group]
        running = [asyncio.create_task(watcher.run(stop)) for watcher in everyone]
        first_epoch, second_epoch = [
            (await read_snapshot(nodes.for_bot(bot), bot)).epoch for bot in (first, second)
        ]
        deployment.start(
            "ingest",
            "--source=replay",
            f"--replay=ALT-BTC={KLINES}",
            f"--replay=ALT-ETH={KLINES}",
            "--speed=6000",
            **CLUSTER_ENV,
        )
        for watcher in watchers[first]:
            await watcher.reach(30, timeout_s=60)
        assert victim.process is not None
        victim.process.kill()  # SIGKILL: the replica takes over after the node timeout
        victim.process.wait(timeout=10)

        snapshots = {bot: await settled(nodes, bot) for bot in (first, second)}
        assert snapshots[first].epoch != first_epoch, "a failover may have lost writes (2.1.19)"
        assert snapshots[second].epoch == second_epoch, "its shard never failed"

        async def converged() -> bool:
            return all(
                (watcher.epoch, watcher.last_seq) == (snapshots[bot].epoch, snapshots[bot].seq)
                for bot, group in watchers.items()
                for watcher in group
            )

        await eventually(converged, timeout_s=60, what=lambda: f"clients at the end: {watchers}")
        stop.set()
        await asyncio.gather(*running)

        assert_as_backtested(deployment.config_path, snapshots, tmp_path)
    finally:
        codes = deployment.stop_all()
        await nodes.aclose()
    assert all(code == 0 for code in codes.values()), codes
