"""The strategy worker's loop: market streams in, one atomic commit of events + checkpoint out.

Each (bot, symbol) is a partition with its own checkpoint (the last market entry id it applied),
stored in the bot's slot beside its state, so a batch's events and the checkpoint that produced
them land together or not at all (SPEC 4.1 rule 12). After any failed commit the in-memory state
is thrown away and reloaded from Redis: Redis, not memory, is the truth.

Replicas share the partitions through leases (`libs.store.leases`): a replica works only on the
partitions it holds, and every commit is fenced by their tokens, so a replica that lost one
while paused writes nothing. Every commit also runs only on the redis-server its partitions
were read from: redis-py reconnects a pooled connection silently, and a restarted Redis may
have lost the last commits (AOF `everysec`), so memory committed there would no longer match
the checkpoint Redis holds (SPEC 4.1 rule 12). On another server the commit writes nothing
(`RedisReplaced`) and the partitions are reloaded, as after any Redis error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from libs.config import BotConfig
from libs.core.market import MarketUpdate
from libs.core.strategies.contract import StrategyFailed
from libs.core.strategy import AnnotatedKline, SymbolStrategy
from libs.errors import LeaseLost
from libs.ops.health import Health
from libs.store import keys
from libs.store.bot_state import freeze_strategy_parameters, thawed
from libs.store.client import RedisNodes, side_by_side
from libs.store.leases import LeaseKeeper
from libs.store.partitions import PartitionId
from libs.store.server import RedisReplaced, confirm_server, read_server
from libs.store.streams import StreamEntries, read_streams
from libs.trading import (
    load_strategy_with_parameters,
    new_symbol_strategy,
    strategy_params,
    symbol_terms,
)
from libs.wire.checkpoint import decode_strategy, encode_strategy
from libs.wire.convert import kline_wire, trade_wire
from libs.wire.events import StrategyEvent
from libs.wire.frames import JSONObject
from libs.wire.market import decode_update, entry_key

log = logging.getLogger(__name__)

UPDATES = Counter("bandwagon_strategy_updates_total", "Market updates applied", ["bot"])
FILLS = Counter("bandwagon_strategy_fills_total", "Fills produced", ["bot"])
STRATEGY_ERRORS = Counter(
    "bandwagon_strategy_errors_total",
    "Updates at which a bot's strategy failed and halted its symbol (SPEC 3.2 rule 9)",
    ["bot"],
)
OVERRUNS = Counter(
    "bandwagon_strategy_stream_overruns_total",
    "Times a market stream's cap (market_stream_len) trimmed entries this worker had not read",
    ["stream"],
)
UPDATES_PER_ROUND = 1_000_000
"""(partition, market update) pairs one read may bring: a round's reads, core calls and commits
must end well within a lease renewal period (a third of LEASE_TTL_S), however many partitions
read each stream, or the worker's own leases expire while it works."""
YIELD_EVERY_S = 0.05
"""The longest the core's work holds the event loop within a round."""
LINGER_BELOW = 16  # a read of fewer entries means the worker is caught up with a trickle
WITHIN_CAP_CHECK = "market streams within cap"  # SPEC 4.1 rule 12: readiness false meanwhile

FIRST_ENTRY = "0-0"  # SPEC 3.1 rule 17: a new bot reads each stream from its oldest entry


@dataclass
class Partition:
    bot: BotConfig
    index: int
    stream: str
    strategy: SymbolStrategy
    checkpoint: str
    redis_run_id: str = ""
    """The redis-server this partition was read from: the only one it may be committed to."""
    halted: str | None = None
    """Why its strategy failed (SPEC 3.2 rule 9): it reads nothing more until a restart."""

    @property
    def product_id(self) -> str:
        return self.bot.symbols[self.index].product_id

    @property
    def id(self) -> PartitionId:
        return PartitionId(self.bot.id, f"strategy:{self.product_id}")

    @property
    def stream_name(self) -> str:
        return keys.market_name(self.bot.exchange, self.product_id, self.bot.kline_size)


@dataclass
class BatchOutput:
    """What one partition produced in one batch, turned into one event."""

    klines: dict[int, AnnotatedKline] = field(default_factory=dict)
    trades: list[JSONObject] = field(default_factory=list)
    last_entry_id: str = ""


async def load_partitions(
    redis: Redis | RedisNodes,
    bots: list[BotConfig],
    owned: set[PartitionId] | None = None,
    *,
    redis_run_ids: Mapping[Redis, str] | None = None,
) -> list[Partition]:
    """The partitions of `bots` (those in `owned`, when given) as of their last commit, each
    read from the redis-server whose run_id `redis_run_ids` gives for its bot's Redis (`read_server`
    before this call)."""
    nodes = RedisNodes.wrapping(redis)
    if owned is not None:  # a rebalance: only the bots that have a partition to load
        bots = [bot for bot in bots if any(p.bot == bot.id for p in owned)]
    strategies = {bot.id: load_strategy_with_parameters(bot) for bot in bots}  # checked at start
    loaded: dict[str, list[Partition]] = {}

    async def load_bot(configured: BotConfig) -> None:
        logic, parameters = strategies[configured.id]
        redis = nodes.for_bot(configured.id)
        redis_run_id = (redis_run_ids or {}).get(redis, "")
        frozen = await redis.hget(keys.meta(configured.id), "config")
        if frozen is not None:
            bot = thawed(configured, frozen)
            if not bot.strategy.is_built_in:
                await freeze_strategy_parameters(redis, bot, parameters)
        elif configured.has_market_terms:
            bot = configured
        else:  # its terms come from the source; accounting fixes them when it creates the state
            log.debug(
                "waiting for the state of a bot whose market terms come from the source",
                extra={"bot": configured.id},
            )
            return
        found: list[Partition] = []
        loaded[bot.id] = found
        for index, symbol in enumerate(bot.symbols):
            if (
                owned is not None
                and PartitionId(bot.id, f"strategy:{symbol.product_id}") not in owned
            ):
                continue
            saved = await redis.hgetall(keys.strategy_state(bot.id, symbol.product_id))
            if saved:
                strategy = decode_strategy(
                    symbol_terms(bot, index, logic), strategy_params(bot, logic), saved["state"]
                )
                checkpoint = str(saved["checkpoint"])
            else:
                strategy, checkpoint = new_symbol_strategy(bot, index, logic), FIRST_ENTRY
            stream = keys.market_stream(bot.exchange, symbol.product_id, bot.kline_size)
            found.append(Partition(bot, index, stream, strategy, checkpoint, redis_run_id))

    await side_by_side(load_bot, bots)  # a bounded number of bots side by side
    return [partition for bot in bots for partition in loaded.get(bot.id, [])]


@dataclass(frozen=True, slots=True)
class DecodedEntry:
    """A market stream entry decoded once per read, for every partition that reads its stream
    (a market shared by a hundred bots is decoded once, not a hundred times)."""

    entry_id: str
    key: tuple[int, int]
    update: MarketUpdate | None
    error: str = ""


def decode_entries(entries: StreamEntries) -> list[DecodedEntry]:
    decoded: list[DecodedEntry] = []
    for entry_id, fields in entries:
        try:
            decoded.append(DecodedEntry(entry_id, entry_key(entry_id), decode_update(fields)))
        except (KeyError, ValueError) as error:
            decoded.append(DecodedEntry(entry_id, entry_key(entry_id), None, str(error)))
    return decoded


def apply_entries(
    partition: Partition, entries: Sequence[DecodedEntry], output: BatchOutput
) -> None:
    """Feed the partition the entries after its checkpoint, as one batch of the core; entries
    that do not decode, or whose kline is older than one seen, are skipped and reported."""
    start_checkpoint = partition.checkpoint
    checkpoint = entry_key(start_checkpoint)
    bot = partition.bot
    context = {"bot": bot.id, "stream": partition.stream}
    updates: list[MarketUpdate] = []
    update_ids: list[str] = []
    for entry in entries:
        if entry.key <= checkpoint:
            continue
        if entry.update is not None:
            updates.append(entry.update)
            update_ids.append(entry.entry_id)
        else:
            log.warning(
                "market entry skipped: %s",
                entry.error,
                extra={**context, "entry_id": entry.entry_id},
            )
        partition.checkpoint = output.last_entry_id = entry.entry_id
    if not updates:
        return
    step = partition.strategy.on_batch(updates, kline_limit=bot.kline_history)
    if step.failure is not None:
        failed = update_ids[step.failure.index]
        _halt(partition, entries, start_checkpoint, failed, step.failure, output)
    for index in step.rejected:
        log.warning(
            "market entry skipped: its kline is older than one already seen",
            extra={**context, "entry_id": update_ids[index]},
        )
    for annotated in step.klines:
        output.klines[annotated.kline.time_ms] = annotated
    decimals = partition.strategy.terms.price_decimals
    for fill in step.fills:
        output.trades.append(trade_wire(fill, decimals))
        log.info(
            "order filled",
            extra={**context, "symbol": partition.product_id, "order_id": fill.order_id},
        )
    applied = len(updates) if step.failure is None else step.failure.index
    UPDATES.labels(bot=bot.id).inc(applied - len(step.rejected))
    FILLS.labels(bot=bot.id).inc(len(step.fills))


def _halt(
    partition: Partition,
    entries: Sequence[DecodedEntry],
    start_checkpoint: str,
    failed_entry_id: str,
    failure: StrategyFailed,
    output: BatchOutput,
) -> None:
    """SPEC 3.2 rule 9: the checkpoint stays just before the failing update (what the batch
    applied before it is committed), the partition reads nothing more until a restart, and the
    failure is logged, counted and named by `/readyz`."""
    bot = partition.bot
    failed_key = entry_key(failed_entry_id)
    applied = [
        entry.entry_id for entry in entries if entry_key(start_checkpoint) < entry.key < failed_key
    ]
    partition.checkpoint = applied[-1] if applied else start_checkpoint
    output.last_entry_id = applied[-1] if applied else ""
    partition.halted = failure.reason
    STRATEGY_ERRORS.labels(bot=bot.id).inc()
    log.error(
        "strategy failed; this symbol halts before the update until a restart: %s",
        failure.reason,
        extra={
            "bot": bot.id,
            "symbol": partition.product_id,
            "update_time_ms": failure.time_ms,
            "entry_id": failed_entry_id,
        },
    )


def halted_check(partition: Partition) -> str:
    """The `/readyz` check that names a partition its strategy halted."""
    return f"strategy of {partition.bot.id} {partition.product_id} running"


def strategy_event(partition: Partition, output: BatchOutput) -> StrategyEvent:
    """The event accounting folds: the symbol's ledger and position as they now stand, the klines
    touched (newest `kline_history`, last version each) and the fills, in order."""
    bot, strategy = partition.bot, partition.strategy
    logic = strategy.params.strategy
    times = sorted(output.klines)[-bot.kline_history :]
    return StrategyEvent(
        product_id=partition.product_id,
        entry_id=output.last_entry_id,
        time_ms=strategy.last_time_ms,
        first_time_ms=strategy.first_time_ms,
        price=strategy.price,
        signal=strategy.signal,
        ledger=strategy.ledger,
        klines=tuple(
            kline_wire(output.klines[time], bot.kline_size, bot.period_ms, logic) for time in times
        ),
        trades=tuple(output.trades),
    )


class StrategyWorker:
    def __init__(
        self,
        redis: Redis | RedisNodes,
        bots: list[BotConfig],
        keeper: LeaseKeeper,
        batch_size: int = 1000,
        health: Health | None = None,
        linger_ms: float = 0.0,
    ) -> None:
        self.nodes = RedisNodes.wrapping(redis)
        self.bots = bots
        self.keeper = keeper
        self.batch_size = batch_size
        self.health = health
        self.linger_s = linger_ms / 1000
        self.last_read = batch_size  # entries the previous read returned
        self.partitions: list[Partition] = []
        self.overrun: set[str] = set()  # streams whose cap trimmed entries not yet read
        if health is not None:
            health.set_check(WITHIN_CAP_CHECK, True)

    @property
    def redis(self) -> Redis:
        """The one Redis (on a cluster: the configured node)."""
        return self.nodes.default

    async def load(self) -> None:
        """After a start or any Redis error: renew the leases, then every owned partition as
        of its last commit (memory may be ahead of it)."""
        await self.nodes.refresh()  # after any error: a failover moves slots (rule 13)
        owned = await self.keeper.beat()
        self.partitions = await self._load(owned)
        await self.check_overruns()

    async def rebalance(self) -> None:
        """Keep what is still owned, load what was acquired, drop what was lost or given up."""
        owned = await self.keeper.beat()
        kept = [p for p in self.partitions if p.id in owned]
        new = owned - {p.id for p in kept}
        self.partitions = kept + (await self._load(new) if new else [])
        await self.check_overruns()

    async def _load(self, owned: set[PartitionId]) -> list[Partition]:
        # the server first, the partitions after: every commit confirms this server still
        # answers, so the state it commits from was read from this server too
        run_ids = {}
        for redis in self.nodes.masters():
            run_ids[redis] = (await read_server(redis)).record.run_id
        return await load_partitions(self.nodes, self.bots, owned, redis_run_ids=run_ids)

    async def check_overruns(self) -> None:
        """SPEC 4.1 rule 12: a consumer further behind than a stream's cap loses entries, and
        that is reported, never silent. A partition whose checkpoint entry is already trimmed
        away (older than the stream's first entry) is at least `market_stream_len` behind, so
        what it has not read is being trimmed: a WARNING, `bandwagon_strategy_stream_overruns
        _total{stream}` and `/readyz` false, until it has caught up past the stream's head.
        A new partition (no checkpoint) reads from the oldest entry by design (3.1 rule 17).
        Checked once a beat (a third of LEASE_TTL_S): getting a cap's worth of entries behind
        and back takes far longer at the default cap of 1,000,000."""
        streams = sorted({p.stream for p in self.partitions if p.checkpoint != FIRST_ENTRY})
        overrun: set[str] = set()
        heads: dict[str, StreamEntries] = {}
        for redis, on_node in self.nodes.by_node(streams).items():
            async with redis.pipeline(transaction=False) as pipe:
                for stream in on_node:
                    pipe.xrange(stream, count=1)
                heads.update(zip(on_node, await pipe.execute(), strict=True))
        if streams:
            for partition in self.partitions:
                if partition.checkpoint == FIRST_ENTRY:
                    continue  # a new partition starts at the head: nothing of it was trimmed
                head = heads.get(partition.stream)
                if head and entry_key(head[0][0]) > entry_key(partition.checkpoint):
                    overrun.add(partition.stream)
        names = {p.stream: p.stream_name for p in self.partitions}
        for stream in sorted(overrun - self.overrun):
            OVERRUNS.labels(stream=names[stream]).inc()
            log.warning(
                "a whole stream cap (market_stream_len) or more behind: entries not yet read "
                "are being trimmed and are lost; going on from the oldest one left",
                extra={"stream": stream},
            )
        for stream in sorted(self.overrun - overrun):
            log.info("caught up within the stream's cap", extra={"stream": stream})
        self.overrun = overrun
        if self.health is not None:
            self.health.set_check(WITHIN_CAP_CHECK, not overrun)

    async def run_once(self, block_ms: int) -> int:
        """Read one batch from every stream, apply it, commit per bot. Returns entries read."""
        if self.keeper.due():
            await self.rebalance()
        by_stream: dict[str, list[Partition]] = defaultdict(list)
        for partition in self.partitions:
            if partition.halted is None:
                by_stream[partition.stream].append(partition)
        read_from = {
            stream: min((p.checkpoint for p in members), key=entry_key)
            for stream, members in by_stream.items()
        }
        if self.linger_s and 0 < self.last_read < LINGER_BELOW:
            # caught up with a trickle: let a few more entries gather, so one read, one core
            # call and one fenced commit serve several updates instead of one each
            await asyncio.sleep(self.linger_s)
        block_ms = max(1, min(block_ms, int(self.keeper.seconds_until_due() * 1000)))
        if not read_from:
            await asyncio.sleep(block_ms / 1000)  # owning nothing: wait for the next beat
            return 0
        readers = sum(len(members) for members in by_stream.values())
        count = max(1, min(self.batch_size, UPDATES_PER_ROUND // readers))
        reply = await read_streams(self.nodes, read_from, count=count, block_ms=block_ms)
        outputs: dict[tuple[str, int], tuple[Partition, BatchOutput]] = {}
        read = 0
        loop = asyncio.get_running_loop()
        yield_at = loop.time() + YIELD_EVERY_S
        for stream, entries in reply:
            read += len(entries)
            decoded = decode_entries(entries)
            for partition in by_stream[stream]:
                if loop.time() >= yield_at:
                    # a round of a thousand bots is seconds of CPU: let the lease renewals and
                    # the health port run meanwhile
                    await asyncio.sleep(0)
                    yield_at = loop.time() + YIELD_EVERY_S
                output = BatchOutput()
                apply_entries(partition, decoded, output)
                if partition.halted is not None and self.health is not None:
                    self.health.set_check(halted_check(partition), False)
                if output.last_entry_id:
                    outputs[(partition.bot.id, partition.index)] = (partition, output)
        if outputs:
            await self._commit(list(outputs.values()))
        self.last_read = read
        return read

    async def _commit(self, touched: list[tuple[Partition, BatchOutput]]) -> None:
        """One fenced MULTI per bot: its events and its partitions' states and checkpoints. A
        bot whose lease moved commits nothing and its partitions are dropped from memory; on a
        redis-server other than the one they were read from nothing is committed, every
        partition is dropped and `RedisReplaced` is raised, so the worker reloads. The bots'
        transactions run side by side, each on a connection of its own, so ten bots cost one
        round of round trips, not ten; any other error is raised once all have settled."""
        by_bot: dict[str, list[tuple[Partition, BatchOutput]]] = defaultdict(list)
        for partition, output in touched:
            by_bot[partition.bot.id].append((partition, output))
        await side_by_side(lambda bot: self._commit_bot(bot, by_bot[bot]), list(by_bot))

    async def _commit_bot(self, bot_id: str, items: list[tuple[Partition, BatchOutput]]) -> None:
        ids = [partition.id for partition, _ in items]
        run_ids = sorted({partition.redis_run_id for partition, _ in items})

        async def on_their_server(tx: Pipeline) -> None:
            for run_id in run_ids:  # partitions read from two servers: one of them is gone
                await confirm_server(tx, run_id)

        try:
            async with self.nodes.for_bot(bot_id).pipeline(transaction=True) as tx:
                await self.keeper.guard(tx, ids, check=on_their_server)
                for partition, output in items:
                    if output.klines or output.trades:
                        fields = strategy_event(partition, output).to_fields()
                        # copied into the dict type redis-py declares (dicts are invariant)
                        tx.xadd(keys.events(bot_id), {name: data for name, data in fields.items()})
                    tx.hset(
                        keys.strategy_state(bot_id, partition.product_id),
                        mapping={
                            "state": encode_strategy(partition.strategy),
                            "checkpoint": partition.checkpoint,
                        },
                    )
                await self.keeper.commit(tx, ids)
        except LeaseLost as lost:
            # every partition of the aborted commit is ahead of Redis now, not only the lost
            # ones: drop them all; the next beat reloads those still owned
            log.warning("commit fenced off: %s", lost, extra={"bot": bot_id})
            self.partitions = [p for p in self.partitions if p.id not in ids]
            self.keeper.forget(ids)
        except RedisReplaced:
            # every partition in memory may be ahead of what this server holds, not only this
            # bot's: drop them all; the worker shell reloads (`load`) after any Redis error
            self.partitions = []
            raise
