"""The Redis key schema: every key Bandwagon reads or writes is spelled here and nowhere else.

Every key of one bot carries `{bot}` as its hash tag, so a bot's atomic commit (status hashes, seq,
refresh log entry, checkpoint) touches one Redis Cluster slot. Every market stream carries its own
tag. Values are plain: hash fields hold JSON values, lists and streams hold JSON documents, so
`redis-cli` shows everything a user needs to inspect. docs/redis-keys.md describes each key.
"""

from __future__ import annotations

PREFIX = "bw"


def market_stream(exchange: str, product_id: str, kline_size: str) -> str:
    """Stream of market updates (one entry per trade or klines row), shared by every bot."""
    return f"{PREFIX}:market:{{{market_name(exchange, product_id, kline_size)}}}"


def market_name(exchange: str, product_id: str, kline_size: str) -> str:
    """A market stream's name in logs and metric labels (`stream`): `mexc.ETH-USDT.1m`."""
    return f"{exchange}.{product_id}.{kline_size}"


def market_terms(exchange: str, product_id: str) -> str:
    """Hash: `min_size`, `price_decimals` as a source (the `ccxt` source, from the exchange's
    markets) last reported them, and `updated_ms`. A bot whose bots file leaves them out takes
    them from here once, when its state is created, and keeps them frozen (SPEC 4.1 rule 6)."""
    return f"{PREFIX}:terms:{{{exchange}.{product_id}}}"


def api_keys() -> str:
    """Hash: lowercase hex SHA-256 of an apiKey -> bot id. Keys themselves are never stored."""
    return f"{PREFIX}:apikeys"


def meta(bot: str) -> str:
    """Hash: `epoch`, `seq` (last published refresh), `config` (frozen trading config, JSON),
    `display` (fees, kline/trade history: what `init` needs besides the hashes), a plug-in's
    validated `strategy_parameters` (JSON, frozen by the strategy worker), and the Redis server
    the state was last vouched for on (`redis_run_id`, `redis_appendfsync`, `redis_replid`:
    SPEC 2.1 rule 19, docs/reliability.md)."""
    return f"{PREFIX}:{{{bot}}}:meta"


def status(bot: str) -> str:
    """Hash of STATUS fields, one JSON value per field, as of refresh `seq`."""
    return f"{PREFIX}:{{{bot}}}:status"


def symbol(bot: str, product_id: str) -> str:
    """Hash of one SYMBOL's scalar fields, one JSON value per field, as of refresh `seq`."""
    return f"{PREFIX}:{{{bot}}}:symbol:{product_id}"


def klines(bot: str, product_id: str) -> str:
    """List of KLINE JSON documents, oldest first, at most `kline_history` long."""
    return f"{PREFIX}:{{{bot}}}:klines:{product_id}"


def trades(bot: str, product_id: str) -> str:
    """List of TRADE JSON documents, oldest first, at most `trade_history` long."""
    return f"{PREFIX}:{{{bot}}}:trades:{product_id}"


def refresh_log(bot: str) -> str:
    """Stream of published refreshes; entry id `<seq>-0`, field `msg` holds the exact text."""
    return f"{PREFIX}:{{{bot}}}:refreshes"


def refresh_channel(bot: str) -> str:
    """Pub/sub channel carrying each refresh text once, as committed (SPUBLISH on a cluster);
    a gateway subscribes to it while it has a client of the bot."""
    return f"{PREFIX}:{{{bot}}}:refresh"


REFRESH_CHANNEL_PATTERN = f"{PREFIX}:{{*}}:refresh"
"""Every bot's channel, for `redis-cli PSUBSCRIBE` on one Redis (gateways subscribe per bot)."""


def bot_from_refresh_channel(channel: str) -> str:
    """Inverse of `refresh_channel`: the bot a received refresh is for."""
    return channel[len(PREFIX) + 2 : -len("}:refresh")]


def bot_of(key: str) -> str:
    """The bot whose `{bot}` hash tag a bot key carries (the inverse of every per-bot function
    here): a reply naming its stream, such as XREAD's, is routed back to its bot."""
    start = key.index("{") + 1
    return key[start : key.index("}", start)]


def events(bot: str) -> str:
    """Stream of strategy events (annotated klines, fills, position) for accounting to fold."""
    return f"{PREFIX}:{{{bot}}}:events"


def strategy_state(bot: str, product_id: str) -> str:
    """Hash: `state` (the (bot, symbol) state machine, JSON) and `checkpoint` (last market entry
    id applied). Committed in one MULTI with the events the batch produced."""
    return f"{PREFIX}:{{{bot}}}:strategy:{product_id}"


def accounting_state(bot: str) -> str:
    """Hash: `book` (the folded ledgers, JSON) and `checkpoint` (last events entry id applied).
    Committed in one MULTI with the status hashes, seq and refresh log entry."""
    return f"{PREFIX}:{{{bot}}}:accounting"


def notify_feed(bot: str) -> str:
    """Stream (capped): what the bot's webhooks hear (SPEC 6.1 rule 2), one entry per published
    fill (`kind` fill, `epoch`, `product_id`, `trade`: the TRADE as refreshes carry it) and per
    new epoch (`kind` epoch, `epoch`, `time`). Written by accounting in the very commit that
    publishes the fill or starts the epoch, only for bots with webhooks; the notify worker turns
    it into deliveries and trims what it has turned."""
    return f"{PREFIX}:{{{bot}}}:notify:feed"


def notify_state(bot: str) -> str:
    """Hash: `checkpoint`, the last feed entry turned into deliveries, committed with them."""
    return f"{PREFIX}:{{{bot}}}:notify:state"


def deliveries(bot: str, hook_id: str) -> str:
    """Stream: one webhook's pending deliveries in `id` order, fields `id`, `event`, `body` (the
    exact bytes signed and sent) and `created_ms`; an entry goes (XDEL) only after its 2xx, or
    after 24 h of failures. `hook_id` hashes the receiver (`libs.config.Webhook.hook_id`), so no
    key shows a URL."""
    return f"{PREFIX}:{{{bot}}}:notify:hook:{hook_id}"


def lease(bot: str, partition: str) -> str:
    """String `<worker id>:<fencing token>` with a TTL: who owns a partition (`strategy:<product
    id>`, `accounting` or `notify`) now. In the bot's slot, so a commit can WATCH it atomically."""
    return f"{PREFIX}:{{{bot}}}:lease:{partition}"


def fence(bot: str, partition: str) -> str:
    """Counter: the partition's last fencing token, incremented by every acquisition."""
    return f"{PREFIX}:{{{bot}}}:fence:{partition}"


def commits(bot: str) -> str:
    """Stream (capped): one entry per fenced commit, fields `partition`, `owner`, `token`, so
    an operator (and the failover tests) can see who wrote what, in commit order."""
    return f"{PREFIX}:{{{bot}}}:commits"


def members(service: str) -> str:
    """Sorted set: live replicas of `strategy`, `accounting` or `notify`, scored by the
    Redis-time (ms) their membership expires, renewed with their leases."""
    return f"{PREFIX}:members:{service}"


def bot_keys_pattern(bot: str) -> str:
    """SCAN pattern matching every key of one bot (for `bandwagon reset`)."""
    return f"{PREFIX}:{{{bot}}}:*"
