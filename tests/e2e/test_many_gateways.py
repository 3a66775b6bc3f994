"""Three gateway processes serve one bot's clients alike, and a killed one costs no seq (issue 5
point 8, issue 6 point 2).

Nine clients, three per gateway, connect before the replay starts, so each begins at seq 1. While
a paced replay of real klines publishes, every client receives every seq in order, and the text of
each seq is the same bytes on every gateway. Then one gateway is SIGKILLed with its three clients
attached: they reconnect to the next gateway with `init` + `since` + `epoch` (SPEC 2.1 rules 4
and 15), get `resume` and the missed refreshes from the log, and continue; at the end every
client holds every seq from 2 to the final one, with no second full `init`.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from tests.e2e.services import REPO, Deployment, Watcher, bot_seq, log_texts, ws_url_of

BOT = "fleet"
API_KEY = "fleet-e2e-key-0123456789abcdef"
KLINES = REPO / "tests" / "data" / "klines-1m-3000.csv"
GATEWAYS = ("gateway", "gateway-2", "gateway-3")
VICTIM = "gateway-2"
CLIENTS_PER_GATEWAY = 3
BOTS_YAML = f"""\
bots:
  - id: {BOT}
    exchange: binance
    start_capital: 1.0
    refresh_interval_ms: 100
    strategy: {{order_type: maker, mode: both, buy_pct: 50, order_timeout_ms: 120000}}
    symbols:
      - {{product_id: ALT-BTC, min_size: "0.01", price_decimals: 8, leverage: 20, isolated: true}}
"""

pytestmark = pytest.mark.timeout(90)


async def test_three_gateways_deliver_the_same_seqs_and_a_killed_one_costs_none(
    deployment: Deployment, redis: Redis
) -> None:
    deployment.start("accounting")
    deployment.start("strategy")
    deployment.start("gateway")
    for name in GATEWAYS[1:]:
        deployment.start("gateway", replica=name)
    deployment.wait_ready("accounting", "strategy", *GATEWAYS)
    urls = [ws_url_of(deployment.services[name]) for name in GATEWAYS]
    assert len(set(urls)) == 3

    stop = asyncio.Event()
    watchers: dict[str, list[Watcher]] = {}
    for index, name in enumerate(GATEWAYS):
        order = urls[index:] + urls[:index]  # its own gateway first, then the next ones
        watchers[name] = [Watcher(order, API_KEY) for _ in range(CLIENTS_PER_GATEWAY)]
    everyone = [watcher for group in watchers.values() for watcher in group]
    running = [asyncio.create_task(watcher.run(stop)) for watcher in everyone]
    for watcher in everyone:
        await watcher.reach(1, timeout_s=20)
    assert {watcher.first_seq for watcher in everyone} == {1}

    deployment.start("ingest", "--source=replay", f"--replay=ALT-BTC={KLINES}", "--speed=3000")
    deployment.wait_ready("ingest")
    for watcher in everyone:  # a few seconds of refreshes through all three gateways
        await watcher.reach(40, timeout_s=30)

    victim = deployment.services.pop(VICTIM)
    victim.process.kill()  # SIGKILL: no close frame, no drain
    assert victim.process.wait(timeout=10) == -9
    for watcher in watchers[VICTIM]:
        for _ in range(200):
            if watcher.resumes:
                break
            await asyncio.sleep(0.05)
    final_seq = await bot_seq(redis, BOT) + 30  # well past the kill
    for watcher in everyone:
        await watcher.reach(final_seq, timeout_s=30)
    stop.set()
    await asyncio.gather(*running)

    for watcher in everyone:
        report = watcher.report()
        assert watcher.missing(final_seq) == [], report
        assert watcher.received[: final_seq - 1] == list(range(2, final_seq + 1)), report
        assert watcher.full_inits == [1] and watcher.gaps == [] and watcher.stale == 0, report
    for watcher in watchers[VICTIM]:
        assert watcher.connects == 2 and len(watcher.resumes) == 1, watcher.report()
        assert watcher.closes == [(1006, "")], watcher.report()  # no close frame from a kill
        assert watcher.url != urls[GATEWAYS.index(VICTIM)]
    for name in GATEWAYS:
        if name != VICTIM:
            for watcher in watchers[name]:
                assert watcher.connects == 1 and watcher.closes == [], watcher.report()

    # the same bytes for each seq, whichever gateway sent it
    reference = everyone[0].digests
    for watcher in everyone[1:]:
        for seq in range(2, final_seq + 1):
            assert watcher.digests[seq] == reference[seq], seq

    codes = deployment.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    for name, text in log_texts(deployment.log_dir).items():
        assert API_KEY not in text, f"a key in {name}"
