"""Writing one market stream: pace a source, batch its updates, XADD each batch atomically.

A batch is one call of a small Lua script on one stream (one slot): atomic like a MULTI, and more
than twice as fast, as redis-py packs one argument per entry instead of nineteen. The entries it
writes are plain XADDs of `encode_update` fields, exactly as `libs.wire.market` spells them.

Exactly once, across Redis outages and restarts: after any failed write the stream's newest entry
is read back before anything is sent again. Its `src` says how much of the batch is in (the
entries of a batch land in order, so what is in is a prefix), so no row is written twice and none
is skipped. This relies on ingest being the only writer of its streams (one ingest process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.core.periods import kline_period_ms
from libs.exchange.market_files import Reject
from libs.store import keys
from libs.store.client import RedisNodes
from libs.wire.market import FIELDS, decode_update, encode_update
from services.ingest.sources import Item, LastEntry, Source

log = logging.getLogger(__name__)

UPDATES = Counter("bandwagon_ingest_updates_total", "Market updates written", ["stream"])
REJECTED = Counter(
    "bandwagon_ingest_rejected_total",
    "Market rows rejected (SPEC 5.1 rule 11)",
    ["stream", "reason"],
)

EARLIER_THAN_STREAM = "earlier than the stream's last entry"
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 5.0
DRAIN_S = 10.0
YIELD_EVERY = 2000  # rows between two chances for the event loop when nothing is written
SEPARATOR = "\x1f"  # ASCII unit separator: in no number, and refused in replay file names

# KEYS[1] = stream; ARGV = maxlen, number of field names, the names, then one argument per entry:
# its values in the order of the names, joined by SEPARATOR. Returns the last entry id.
XADD_BATCH_LUA = """
local maxlen, field_count = ARGV[1], tonumber(ARGV[2])
local entry_id
for i = 3 + field_count, #ARGV do
  local entry, args, start = ARGV[i], {}, 1
  for n = 1, field_count do
    local stop = string.find(entry, "\\31", start, true)
    local value
    if stop then
      value = string.sub(entry, start, stop - 1)
      start = stop + 1
    else
      value = string.sub(entry, start)
    end
    args[2 * n - 1] = ARGV[2 + n]
    args[2 * n] = value
  end
  entry_id = redis.call("XADD", KEYS[1], "MAXLEN", "~", maxlen, "*", unpack(args))
end
return entry_id
"""


class StreamRewound(Exception):
    """The stream's last entry is not the one this writer wrote last: start over after it."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One market stream: `key` for Redis and logs, `name` (no key) for metric labels."""

    exchange: str
    product_id: str
    kline_size: str

    @property
    def key(self) -> str:
        return keys.market_stream(self.exchange, self.product_id, self.kline_size)

    @property
    def name(self) -> str:
        return keys.market_name(self.exchange, self.product_id, self.kline_size)

    @property
    def period_ms(self) -> int:
        return kline_period_ms(self.kline_size)


def report_reject(stream: StreamSpec, source: str, line: int | str, reject: Reject) -> None:
    """SPEC 5.1 rule 11: a WARNING naming source, line, field, value and reason, and a count."""
    log.warning(
        "market row rejected: %s line %s: %s=%r: %s",
        source,
        line,
        reject.field,
        reject.value,
        reject.reason,
        extra={"source": source, "line": line, "stream": stream.key},
    )
    REJECTED.labels(stream=stream.name, reason=reject.reason).inc()


async def newest_entry(redis: Redis, key: str) -> tuple[str, dict[str, str]] | None:
    """XREVRANGE COUNT 1 (the client decodes responses, so ids and fields are `str`)."""
    entries = await redis.xrevrange(key, count=1)
    if not entries:
        return None
    entry_id, fields = entries[0]
    return cast(str, entry_id), cast(dict[str, str], fields)


def _joined_fields(item: Item) -> str:
    fields = encode_update(item.update, item.src)
    return SEPARATOR.join([fields[name] for name in FIELDS])


class Backoff:
    """Capped exponential backoff with jitter: 0.1 s, 0.2 s ... 5 s, each drawn in [d/2, d]."""

    def __init__(self) -> None:
        self.attempt = 0

    def next_delay_s(self) -> float:
        ceiling = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class StreamWriter:
    def __init__(
        self,
        redis: Redis | RedisNodes,
        stream: StreamSpec,
        maxlen: int,
        batch_size: int,
        stop: asyncio.Event,
    ) -> None:
        self.nodes = RedisNodes.wrapping(redis)
        self.stream = stream
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.stop = stop
        self.batch: list[Item] = []
        self.last_entry_id: str | None = None
        self._backoff = Backoff()
        self._uncertain = False
        self._xadd_batch = self.nodes.default.register_script(XADD_BATCH_LUA)

    @property
    def redis(self) -> Redis:
        """The Redis holding the stream (a cluster master: its slot's, SPEC 4.1 rule 13)."""
        return self.nodes.for_key(self.stream.key)

    async def read_last(self) -> LastEntry | None:
        """The stream's newest entry, None when it is empty (or on stop): retried until Redis
        answers."""
        while not self.stop.is_set():
            try:
                newest = await newest_entry(self.redis, self.stream.key)
                self._backoff.reset()
            except (RedisError, OSError) as error:
                await self._wait_after(error, "read the last entry")
                continue
            if newest is None:
                self.last_entry_id = None
                return None
            entry_id, fields = newest
            self.last_entry_id = entry_id
            return LastEntry(entry_id=entry_id, src=fields["src"], update=decode_update(fields))
        return None

    def add(self, item: Item) -> None:
        self.batch.append(item)

    @property
    def full(self) -> bool:
        return len(self.batch) >= self.batch_size

    async def flush(self) -> None:
        """Write the batch atomically, retrying until it is in; after a stop, give up
        after DRAIN_S (a restart resumes from the stream, so nothing is lost from a replay)."""
        give_up_at: float | None = None
        while self.batch:
            if self.stop.is_set():
                give_up_at = give_up_at or time.monotonic() + DRAIN_S
                if time.monotonic() > give_up_at:
                    log.error(
                        "stopping with %d updates unwritten: Redis did not answer",
                        len(self.batch),
                        extra={"stream": self.stream.key},
                    )
                    self.batch.clear()
                    return
            try:
                if self._uncertain:
                    await self._drop_written_prefix()
                    if not self.batch:
                        break
                entries = [_joined_fields(item) for item in self.batch]
                last_id = await self._xadd_batch(
                    keys=[self.stream.key],
                    args=[self.maxlen, len(FIELDS), *FIELDS, *entries],
                    client=self.redis,
                )
            except (RedisError, OSError) as error:
                self._uncertain = True  # the batch may or may not have been applied
                await self._wait_after(error, "write a batch")
                continue
            self._written(cast(str, last_id), len(self.batch))
            self.batch.clear()

    async def _drop_written_prefix(self) -> None:
        newest = await newest_entry(self.redis, self.stream.key)
        self._uncertain = False
        if newest is None or newest[0] == self.last_entry_id:
            return
        entry_id, fields = newest
        written = next(
            (index for index, item in enumerate(self.batch) if item.src == fields["src"]), None
        )
        if written is None:
            # Not in this batch: Redis lost acknowledged writes (a host crash under AOF
            # `everysec`), or another writer. Either way the source must resume after the
            # stream's real last entry, as a restart does, or rows would be skipped.
            log.warning(
                "the stream's last entry %s (src %s) is not in the batch: resuming after it",
                entry_id,
                fields.get("src"),
                extra={"stream": self.stream.key},
            )
            self.batch.clear()
            raise StreamRewound(entry_id)
        log.info(
            "the interrupted batch was written; not sending it again",
            extra={"stream": self.stream.key, "entry_id": entry_id},
        )
        self._written(entry_id, written + 1)
        del self.batch[: written + 1]

    def _written(self, entry_id: str, count: int) -> None:
        self.last_entry_id = entry_id
        self._backoff.reset()
        UPDATES.labels(stream=self.stream.name).inc(count)

    async def _wait_after(self, error: Exception, what: str) -> None:
        delay_s = self._backoff.next_delay_s()
        with contextlib.suppress(RedisError, OSError):
            await self.nodes.refresh()  # a failover moved the stream's slot, maybe
        log.warning(
            "redis unavailable, cannot %s (%s: %s); retrying in %.2f s",
            what,
            type(error).__name__,
            error,
            delay_s,
            extra={"stream": self.stream.key},
        )
        await asyncio.sleep(delay_s)


class Pacer:
    """Maps event time to wall time: the first update is due at once, later ones `speed` times
    faster than their event times (speed 0 = as fast as possible)."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.speed = speed
        self.clock = clock
        self._anchor: tuple[int, float] | None = None

    def delay_s(self, time_ms: int) -> float:
        if self.speed <= 0:
            return 0.0
        if self._anchor is None:
            self._anchor = (time_ms, self.clock())
            return 0.0
        anchor_ms, anchor_wall_s = self._anchor
        due_s = anchor_wall_s + (time_ms - anchor_ms) / 1000.0 / self.speed
        return due_s - self.clock()


async def _stopped_within(stop: asyncio.Event, delay_s: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        return False
    return True


async def run_stream(source: Source, writer: StreamWriter, pacer: Pacer) -> None:
    """Feed one stream until its source ends or stop is set; the current batch is flushed either
    way (SPEC 4.1 rule 4). Never writes an update earlier than the stream's last entry, and
    resumes after it whenever the stream turns out to hold less than was written."""
    while True:
        try:
            await _feed_stream(source, writer, pacer)
            return
        except StreamRewound:
            continue


async def _feed_stream(source: Source, writer: StreamWriter, pacer: Pacer) -> None:
    stream, stop = writer.stream, writer.stop
    last = await writer.read_last()
    if stop.is_set():
        return
    if last is not None:
        log.info(
            "resuming after the stream's last entry (src %s)",
            last.src,
            extra={"stream": stream.key, "entry_id": last.entry_id},
        )
    last_time_ms = None if last is None else last.update.time_ms
    rows = 0
    for item in source.items(last):
        if stop.is_set():
            break
        rows += 1
        time_ms = item.update.time_ms
        if last_time_ms is not None and time_ms < last_time_ms:
            reject = Reject(0, "time", time_ms, EARLIER_THAN_STREAM)
            report_reject(stream, item.src.rpartition(":")[0], item.src.rpartition(":")[2], reject)
        else:
            delay_s = pacer.delay_s(time_ms)
            if delay_s > 0:
                await writer.flush()
                if await _stopped_within(stop, delay_s):
                    break
            writer.add(item)
            last_time_ms = time_ms
            if writer.full:
                await writer.flush()
                continue
        if rows % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    await writer.flush()
    if not stop.is_set():
        log.info("source finished: %s", source.label, extra={"stream": stream.key})
