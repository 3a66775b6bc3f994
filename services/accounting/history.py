"""Lost history (SPEC 2.1 rule 19): no seq is ever published twice with different contents under
one epoch.

Redis acknowledges a write before it is on disk under `appendfsync everysec` (and `no`), and a
replica promoted in a failover misses what its master had not yet sent. Either way Redis can come
back without refreshes that clients already saw; recomputed from the checkpoints that survived,
they would be published again under the same seqs with other contents, and clients that saw
the first ones would skip the second as already seen. No service need have seen Redis go down
(Redis and accounting lost together, a pod rescheduled), so what decides is which redis-server
holds the bot's history: every bot's meta records the server its history was last vouched for on
(`libs.store.server.ServerRecord`), and accounting compares it with the server answering when it
takes the bot, before anything more of it is published:

- the same server process: nothing acknowledged can be missing;
- another one, but the one that went and the one that came both fsync every write before
  acknowledging it (`appendfsync always`) and this one is no promoted replica: a restart that
  lost nothing. The epoch stays and the new server is recorded;
- anything else, including a policy that CONFIG refuses to tell: a new epoch (rule 5, state
  lost), whose refresh 1 is the whole state Redis kept, with the old epoch's log deleted, in one
  fenced commit that also records the server.

Every later commit of the bot runs on a connection that first confirmed the server is still the
one the book was read from, the one just vouched for (`libs.store.confirm_server` in
`LeaseKeeper.guard`), so no commit lands on a server that nobody compared: redis-py reconnects a
pooled connection without a word.
"""

from __future__ import annotations

import enum
import logging
import secrets
import time

from redis.asyncio import Redis

from libs.store import notices
from libs.store.leases import LeaseKeeper
from libs.store.partitions import PartitionId
from libs.store.published import read_snapshot, stage_first_refresh, stage_server_record
from libs.store.server import ALWAYS, ServerRecord, ServerState, on_server
from libs.wire.frames import refresh_frame

log = logging.getLogger(__name__)


class Continuity(enum.Enum):
    SAME_SERVER = "the same server process"
    DURABLE_RESTART = "a restart under appendfsync always"
    MAY_HAVE_LOST = "a server that may have lost acknowledged writes"


def continuity(recorded: ServerRecord | None, now: ServerState) -> Continuity:
    """Can the server answering now be missing writes the recorded one acknowledged?

    A run_id is new at every start of redis-server, so the same run_id is the same process,
    unless that process was made a replica and promoted back since (its replication id changed
    and `master_replid2` is set; a replication id that changes with `master_replid2` unset is
    only its first replica attaching). State written before servers were recorded has no
    record, and counts as "may have lost"."""
    if recorded is None or not now.master:
        return Continuity.MAY_HAVE_LOST
    if recorded.run_id == now.record.run_id and (
        recorded.replid == now.record.replid or not now.promoted
    ):
        return Continuity.SAME_SERVER
    if recorded.appendfsync == ALWAYS and now.record.appendfsync == ALWAYS and not now.promoted:
        return Continuity.DURABLE_RESTART
    return Continuity.MAY_HAVE_LOST


def describe(recorded: ServerRecord | None, now: ServerState) -> str:
    """Why the history may be lost, for the log line."""
    if recorded is None:
        return "no Redis server recorded with this state"
    if not now.master:
        return f"Redis {now.record.run_id} is not a master"
    if now.promoted:
        return f"Redis {now.record.run_id} is a promoted replica (failover)"
    return (
        f"Redis restarted: {recorded.run_id} (appendfsync {recorded.appendfsync}) went, "
        f"{now.record.run_id} (appendfsync {now.record.appendfsync}) came"
    )


async def renew_epoch(
    redis: Redis,
    keeper: LeaseKeeper,
    partition: PartitionId,
    server: ServerRecord,
    *,
    notify: bool = False,
) -> str:
    """SPEC 2.1 rule 5, state lost: a new epoch whose refresh 1 is the whole state Redis kept
    (every symbol with the klines and trades it holds), the old epoch's log deleted, so no
    client resumes across the loss and every one re-inits (rule 8). One fenced commit, run on
    `server` only, that also records it. Returns the new epoch."""
    bot = partition.bot
    snapshot = await read_snapshot(redis, bot)
    epoch = secrets.token_hex(8)
    text = refresh_frame(seq=1, epoch=epoch, symbols=snapshot.symbols, status=snapshot.status)
    async with redis.pipeline(transaction=True) as tx:
        await keeper.guard(tx, [partition], check=on_server(server.run_id))
        stage_first_refresh(tx, bot=bot, epoch=epoch, refresh_text=text, meta=server.fields())
        if notify:  # the bot's webhooks hear of the new epoch (SPEC 6.1 rule 2, state lost)
            notices.stage_epoch(tx, bot=bot, epoch=epoch, time_ms=int(time.time() * 1000))
        await keeper.commit(tx, [partition])
    return epoch


async def record_server(
    redis: Redis, keeper: LeaseKeeper, partition: PartitionId, server: ServerRecord
) -> None:
    """Record `server` as the one the bot's history continues on: a fenced commit, run on that
    server only, that publishes nothing."""
    async with redis.pipeline(transaction=True) as tx:
        await keeper.guard(tx, [partition], check=on_server(server.run_id))
        stage_server_record(tx, bot=partition.bot, server=server)
        await keeper.commit(tx, [partition])
