"""Failover (issue 6 point 3, SPEC 4.1 rule 9): three strategy and two accounting replicas share
three bots of two symbols each (six strategy partitions, three accounting partitions) during a
paced replay of real klines, while replicas are SIGKILLed (some restarted under their name, as a
pod's container is, one left dead) and SIGSTOPped past their lease (a paused, not dead, owner)
at random. At the end:

- every bot's trades, SYMBOL scalars and STATUS equal `bandwagon backtest --json` on the same
  data and bots file, as one uninterrupted process would end;
- no partition ever had two committed writers: in each bot's commit record (`bw:{bot}:commits`,
  one entry per fenced commit, in commit order) the tokens of a partition never go back, and
  each token belongs to one owner;
- partitions really moved: some partition committed under more than one token.

Leases run at 2 s here instead of 10 s so the test takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import textwrap
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from libs.core.market import Kline
from libs.core.periods import kline_period_ms
from libs.errors import StateMissing
from libs.exchange.market_files import read_market_file
from libs.store import keys
from libs.store.published import Snapshot, read_snapshot
from tests.e2e.services import REPO, Deployment, Service, backtest_json
from tests.support.polling import eventually
from tools.run.redis_server import RedisServer

KLINES = REPO / "tests" / "data" / "klines-1m-3000.csv"
KLINES_EVENT_S = 3000 * 60
REPLAY_S = 14.0
LEASE_TTL_S = 2.0
PAUSE_S = 3.0  # longer than a lease: the paused owner's partitions move meanwhile
FAULTS = 8
SEED = 20261124
PRODUCTS = ("ALT-BTC", "XRP-ETH")
BOTS = {
    "fo-a": "{order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 120000}",
    "fo-b": "{order_type: taker, mode: long, buy_pct: 30}",
    "fo-c": "{order_type: maker, mode: short, buy_pct: 40, order_timeout_ms: 60000}",
}
STRATEGY_REPLICAS = ("strategy-1", "strategy-2", "strategy-3")
ACCOUNTING_REPLICAS = ("accounting-1", "accounting-2")

pytestmark = pytest.mark.timeout(120)


def bots_yaml() -> str:
    blocks = []
    for bot_id, strategy in BOTS.items():
        blocks.append(
            textwrap.dedent(
                f"""\
                  - id: {bot_id}
                    api_key_env: KEY_{bot_id.upper().replace("-", "_")}
                    exchange: binance
                    start_capital: 1.0
                    refresh_interval_ms: 100
                    kline_history: 5
                    trade_history: 1000
                    strategy: {strategy}
                    symbols:
                      - {{product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 20,
                         isolated: true}}
                      - {{product_id: XRP-ETH, min_size: "0.01", price_decimals: 8, leverage: 3,
                         isolated: false, weight: 2}}
                """
            )
        )
    return "bots:\n" + "".join(textwrap.indent(block, "  ") for block in blocks)


def api_keys() -> dict[str, str]:
    return {
        f"KEY_{bot.upper().replace('-', '_')}": f"failover-key-{bot}-0123456789" for bot in BOTS
    }


@pytest.fixture
async def deployment(
    redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> AsyncIterator[Deployment]:
    config = tmp_path / "bots.yaml"
    config.write_text(bots_yaml())
    deployment = Deployment(
        redis_server.url,
        config,
        tmp_path,
        "unused-key-0123456789",
        passwords=redis_server.passwords,
    )
    yield deployment
    for service in deployment.services.values():
        if service.process.poll() is None:
            os.kill(service.process.pid, signal.SIGCONT)
    deployment.stop_all()


def last_kline() -> Kline:
    *_, (_, last) = read_market_file(KLINES, kline_period_ms("1m"))
    return last.kline


def shows_final(snapshot: Snapshot, final: Kline) -> bool:
    for symbol in snapshot.symbols:
        klines = symbol["klines"]
        if not klines or (klines[-1]["time"], klines[-1]["volume"]) != (
            final.time_ms,
            final.volume,
        ):
            return False
    return True


async def settled(redis: Redis, bot_id: str, final: Kline, timeout_s: float = 40.0) -> Snapshot:
    async def shows_it() -> Snapshot | None:
        try:
            snapshot = await read_snapshot(redis, bot_id)
        except StateMissing:
            return None
        return snapshot if shows_final(snapshot, final) else None

    return await eventually(
        shows_it, timeout_s=timeout_s, poll_s=0.1, what=f"{bot_id} at the file's last update"
    )


def start_replica(deployment: Deployment, label: str) -> Service:
    service = "strategy" if label.startswith("strategy") else "accounting"
    return deployment.start(service, replica=label, LEASE_TTL_S=str(LEASE_TTL_S), **api_keys())


async def chaos(deployment: Deployment, rng: random.Random, log: list[str]) -> None:
    """FAULTS faults, one every ~1.5 s: SIGKILL and restart under the same name (a container
    restart: same worker id, so it takes its own leases back with new tokens), SIGKILL for good
    (once, a strategy replica: its partitions wait out their leases), SIGSTOP past the lease."""
    dead_for_good = False
    for _ in range(FAULTS):
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        alive = [
            label
            for label in (*STRATEGY_REPLICAS, *ACCOUNTING_REPLICAS)
            if label in deployment.services and deployment.services[label].process.poll() is None
        ]
        label = rng.choice(alive)
        process = deployment.services[label].process
        fault = rng.choice(["restart", "pause", "pause", "kill"] if not dead_for_good else
                           ["restart", "pause"])  # fmt: skip
        if fault == "kill" and label.startswith("accounting"):
            fault = "restart"  # keep one accounting replica alive to own the bots
        log.append(f"{fault} {label}")
        if fault == "pause":
            process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(PAUSE_S)
            process.send_signal(signal.SIGCONT)
        else:
            process.kill()
            process.wait()
            if fault == "kill":
                dead_for_good = True
            else:
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                start_replica(deployment, label)


def check_single_writer(commits: list[dict[str, str]], bot_id: str) -> int:
    """Per partition, in commit order: tokens never go back, each token has one owner. Returns
    how many partitions committed under more than one token (they moved)."""
    tokens: dict[str, list[int]] = defaultdict(list)
    owners: dict[tuple[str, int], set[str]] = defaultdict(set)
    for entry in commits:
        token = int(entry["token"])
        tokens[entry["partition"]].append(token)
        owners[(entry["partition"], token)].add(entry["owner"])
    for partition, seen in tokens.items():
        assert seen == sorted(seen), f"{bot_id}/{partition}: a stale owner committed: {seen}"
    for (partition, token), who in owners.items():
        assert len(who) == 1, f"{bot_id}/{partition} token {token} committed by {who}"
    assert set(tokens) == {"accounting", *(f"strategy:{p}" for p in PRODUCTS)}
    return sum(len(set(seen)) > 1 for seen in tokens.values())


async def test_replicas_killed_and_paused_at_random_end_as_one_uninterrupted_process(
    deployment: Deployment, redis: Redis, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    for label in (*ACCOUNTING_REPLICAS, *STRATEGY_REPLICAS):
        start_replica(deployment, label)
    deployment.wait_ready(*ACCOUNTING_REPLICAS, *STRATEGY_REPLICAS)
    replays = [f"--replay={product}={KLINES}" for product in PRODUCTS]
    speed = KLINES_EVENT_S / REPLAY_S
    deployment.start("ingest", "--source=replay", *replays, f"--speed={speed}")
    faults: list[str] = []
    await chaos(deployment, rng, faults)

    final = last_kline()
    moved = 0
    for bot_id in BOTS:
        snapshot = await settled(redis, bot_id, final)
        files = [f"--klines={product}={KLINES}" for product in PRODUCTS]
        reference = backtest_json(
            deployment.config_path, bot_id, files, tmp_path / f"{bot_id}.json"
        )
        assert any(symbol["trades"] for symbol in snapshot.symbols), f"{bot_id} must trade"
        for live, tested in zip(snapshot.symbols, reference["symbols"], strict=True):
            order_ids = [trade["order_id"] for trade in live["trades"]]
            assert len(order_ids) == len(set(order_ids)), f"{bot_id}: a trade doubled"
            assert tested == {k: v for k, v in live.items() if k != "klines"}, (bot_id, faults)
        assert reference["status"] == snapshot.status, (bot_id, faults)
        commits = [fields for _, fields in await redis.xrange(keys.commits(bot_id))]
        moved += check_single_writer(commits, bot_id)
    assert moved > 0, f"no partition changed owner under {faults}"


async def test_a_dead_owners_partitions_are_owned_again_within_15_s_at_the_default_lease(
    deployment: Deployment, redis: Redis
) -> None:
    """SPEC 4.1 rule 9 with 5.1 rule 12's defaults (a lease of 10 s renewed every 3 s): SIGKILL
    the replica holding a bot's accounting partition; the survivor owns it, with a new token,
    within 15 s."""
    for label in ACCOUNTING_REPLICAS:
        deployment.start("accounting", replica=label, **api_keys())
    deployment.wait_ready(*ACCOUNTING_REPLICAS)
    lease_key = keys.lease("fo-a", "accounting")
    taken = await eventually(
        lambda: redis.get(lease_key), timeout_s=15, poll_s=0.1, what="an owner of the partition"
    )
    owner, _, token = str(taken).rpartition(":")
    deployment.services[owner].process.kill()
    killed_at = time.monotonic()

    async def taken_over() -> str | None:
        value: str | None = await redis.get(lease_key)
        return value if value is not None and not value.startswith(f"{owner}:") else None

    value = await eventually(
        taken_over, timeout_s=15, poll_s=0.1, what=f"another owner than {owner}, which died"
    )
    took_s = time.monotonic() - killed_at
    survivor, _, new_token = str(value).rpartition(":")
    assert survivor in ACCOUNTING_REPLICAS and int(new_token) > int(token)
    assert took_s > 3, "the lease, not a release, moved it: the owner was killed, not stopped"
    print(f"failover took {took_s:.1f} s")
