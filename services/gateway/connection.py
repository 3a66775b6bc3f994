"""One websocket client: a reader that answers requests in arrival order, and one writer task that
drains a bounded queue and keeps the connection's place in its bot's refresh sequence.

The hub only appends shared `Refresh` objects to the queue; every per-connection decision (skip a
duplicate, fill a gap from the hub's ring or the log, follow a new epoch) is the writer's, so the
fan-out stays a loop of appends. Replies (errors, `init`, `resume`, the `refresh` reply) go through
the same queue, which is what keeps them in order with the refreshes around them (SPEC 2.1 rules 2,
7, 9 and 15).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from redis.exceptions import RedisError

from libs.config import Settings, api_key_hash
from libs.errors import ClientError, StateMissing
from libs.store import keys
from libs.store.client import RedisNodes
from libs.wire.frames import error_frame, refresh_head, resume_frame
from services.gateway import metrics
from services.gateway.hub import Hub, LogEntries, Refresh, read_log
from services.gateway.inits import BuiltInit, InitCache
from services.gateway.limits import FailedKeys, TokenBucket
from services.gateway.protocol import (
    CLOSE_RATE_LIMITED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_UNAVAILABLE,
    REASON_SLOW_CONSUMER,
    Document,
    check_action,
    check_key_present,
    check_resume_fields,
    key_could_be_configured,
    parse_frame,
    seq_of_entry_id,
    unauthorized,
)
from services.gateway.registry import KeyRegistry, RegistryMissing
from services.gateway.wsprotocol import TransportControl

log = logging.getLogger(__name__)

ASGIMessage = dict[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]

NO_STATUS_RECEIVED = 1005
CLOSE_INTERNAL_ERROR = 1011  # SPEC 2.1 rule 4
REASON_INTERNAL_ERROR = "internal_error"
FILL_RETRY_FIRST_S = 0.1
FILL_RETRY_MAX_S = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """What every connection of one gateway process shares."""

    settings: Settings
    redis: RedisNodes
    hub: Hub
    failed_keys: FailedKeys
    inits: InitCache
    registry: KeyRegistry


@dataclass(frozen=True, slots=True)
class _Error:
    """An error frame (SPEC 2.1 rule 3)."""

    text: str


@dataclass(frozen=True, slots=True)
class _Start:
    """An `init` or `resume` at `seq`: the connection's place restarts there, and what the bot
    published up to `target_seq` follows it (SPEC 2.1 rules 7 and 15)."""

    mode: Literal["full", "resume"]  # the label of `bandwagon_ws_inits_total`
    text: str
    seq: int
    epoch: str
    target_seq: int
    init: BuiltInit | None = None  # a full init's shared text and frame


@dataclass(frozen=True, slots=True)
class _RefreshReply:
    """The reply to a `refresh` request: the bot's newest refresh (SPEC 2.1 rule 9)."""

    text: str
    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


_Reply = _Error | _Start | _RefreshReply


def _unavailable(message: str, close_code: int | None = CLOSE_UNAVAILABLE) -> ClientError:
    return ClientError("unavailable", message, close_code)


class Connection:
    def __init__(
        self,
        context: ConnectionContext,
        receive: ASGIReceive,
        send: ASGISend,
        address: str,
        control: TransportControl | None,
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._redis = context.redis
        self._hub = context.hub
        self._registry = context.registry
        self._receive = receive
        self._asgi_send = send
        self.address = address  # for the failed-keys count only: never logged or labelled
        self._control = control
        self._loop = asyncio.get_running_loop()
        self._limit = self._settings.gateway_send_queue
        # a list, not a deque: at most `gateway_send_queue` (64) items, usually none, and an
        # empty deque reserves some 600 bytes, per connection
        self._queue: list[Refresh | _Reply | _Close] = []
        self._writer: asyncio.Task[None] | None = None  # only while something is queued
        self._closer: asyncio.Task[None] | None = None
        self._auth_timer: asyncio.TimerHandle | None = None
        self._bucket = TokenBucket(
            self._settings.gateway_rate_burst, self._settings.gateway_rate_per_s, self._loop.time()
        )
        self._closing = False
        self._close_code: int | None = None
        self.bot: str | None = None
        self.key_hash: str | None = None
        self._epoch: str | None = None
        self._next_seq = 0
        self.send_started_s: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve from the end of the handshake until the TCP connection is gone."""
        metrics.CONNECTIONS.inc()
        if not self._closing:  # not already closed `going_away` by a drain that raced the accept
            self._auth_timer = self._loop.call_later(
                self._settings.gateway_auth_timeout_s, self._auth_expired
            )
        peer_code = NO_STATUS_RECEIVED
        try:
            while True:
                event = await self._receive()
                kind = event["type"]
                if kind == "websocket.disconnect":
                    peer_code = int(event.get("code") or NO_STATUS_RECEIVED)
                    break
                if kind == "websocket.receive" and not self._closing:
                    try:
                        await self._on_message(event.get("text"))
                    except Exception:  # a bug must cost one connection, not the process
                        log.exception("request failed", extra={"bot": self.bot})
                        self.close_now(CLOSE_INTERNAL_ERROR, REASON_INTERNAL_ERROR)
        finally:
            self._stop_listening()
            writer = self._writer
            if writer is not None and not writer.done():  # nothing more can reach the peer now
                writer.cancel()
                await asyncio.wait([writer])
            if self._closer is not None:
                await asyncio.wait([self._closer])
            await self._wait_until_lost()
            metrics.CONNECTIONS.dec()
            code = self._close_code if self._close_code is not None else peer_code
            metrics.CLOSES.labels(code=str(code)).inc()

    async def _wait_until_lost(self) -> None:
        """After the close frame, give the peer `GATEWAY_SEND_STALL_S` to finish the handshake;
        a peer that does not read is then cut off (SPEC 5.1 rule 5)."""
        if self._control is None:
            return
        try:
            await asyncio.wait_for(
                self._control.lost.wait(), timeout=self._settings.gateway_send_stall_s
            )
        except TimeoutError:
            self._control.abort()

    def abort(self) -> None:
        """Drain deadline passed: cut the TCP connection (SPEC 4.1 rule 4, 5.1 rule 7)."""
        if self._control is not None:
            self._control.abort()

    def _stop_listening(self) -> None:
        self._closing = True
        self._stop_auth_timer()
        if self.bot is not None:
            self._hub.unsubscribe(self.bot, self)

    def close_now(self, code: int, reason: str) -> None:
        """Close at once, dropping what is queued: `slow_consumer` and `going_away` (SPEC 2.1
        rule 4). Synchronous, so the hub's fan-out can call it without waiting."""
        if self._close_code is not None or self._closer is not None:
            return
        self._stop_listening()
        self._queue.clear()
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        self._closer = self._loop.create_task(self._close_after(writer, code, reason))

    async def _close_after(self, writer: asyncio.Task[None] | None, code: int, reason: str) -> None:
        if writer is not None:
            await asyncio.wait([writer])
        await self._send_close(code, reason)

    def stalled(self, now_s: float) -> bool:
        """One send blocked longer than `GATEWAY_SEND_STALL_S` (SPEC 5.1 rule 5)."""
        started_s = self.send_started_s
        return started_s is not None and now_s - started_s > self._settings.gateway_send_stall_s

    def revoke(self) -> None:
        """The key no longer maps to this bot in an existing registry (SPEC 2.1 rule 16):
        `unauthorized`, then 4401."""
        if not self._closing:
            self._fail(unauthorized("the apiKey is no longer configured"))

    def _auth_expired(self) -> None:
        """No `init` within `GATEWAY_AUTH_TIMEOUT_S` (SPEC 5.1 rule 2, 2.1 rule 18)."""
        self._auth_timer = None
        if self.bot is None and not self._closing:
            self._fail(unauthorized("no init within the auth timeout"))

    def _stop_auth_timer(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    # -- queue ------------------------------------------------------------------------------

    def push(self, refresh: Refresh) -> None:
        """The hub's fan-out: the shared frame written at once when this connection is idle and
        it is the seq it expects next (the common case), else one append to the queue, or the
        `slow_consumer` close (SPEC 5.1 rule 5)."""
        if self._closing:
            return
        control, writer = self._control, self._writer
        if (
            (writer is None or writer.done())  # nothing being sent
            and not self._queue
            and control is not None
            and refresh.seq == self._next_seq
            and refresh.epoch == self._epoch
            and control.write_frame(refresh.frame)
        ):
            self._next_seq = refresh.seq + 1
            received_s = refresh.received_s
            metrics.SENDS.sent_one(None if received_s is None else self._loop.time() - received_s)
            return
        if len(self._queue) >= self._limit:
            self.close_now(CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER)
            return
        self._queue.append(refresh)
        self._wake_writer()

    def _enqueue(self, item: _Reply | _Close, *, bounded: bool = True) -> bool:
        if bounded and len(self._queue) >= self._limit:
            self.close_now(CLOSE_SLOW_CONSUMER, REASON_SLOW_CONSUMER)
            return False
        self._queue.append(item)
        self._wake_writer()
        return True

    def _wake_writer(self) -> None:
        """A writer task exists only while the queue holds something: an idle connection keeps
        no task, and nothing it sent (an init of a hundred KiB) stays referenced."""
        writer = self._writer
        if writer is None or writer.done():
            self._writer = self._loop.create_task(self._write_queued())

    def _fail(self, error: ClientError) -> None:
        """Answer with the error frame; close after it when the code requires (2.1 rules 3, 4).
        Every `unauthorized` answer counts toward the address's failed keys (5.1 rule 4), the
        auth timeout's and a revoked key's included."""
        metrics.ERRORS.labels(code=error.code).inc()
        if error.code == "unauthorized":
            self._context.failed_keys.record(self.address, self._loop.time())
        frame = _Error(error_frame(error.code, error.message))
        if error.close_code is None:
            self._enqueue(frame)
            return
        self._stop_listening()
        self._enqueue(frame, bounded=False)
        self._enqueue(_Close(error.close_code, error.code), bounded=False)

    # -- writer -----------------------------------------------------------------------------

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                item = self._queue.pop(0)
                if type(item) is Refresh:
                    await self._forward(item)
                elif type(item) is _Error:
                    await self._send_text(item.text, None)
                elif type(item) is _Start:
                    await self._begin(item)
                elif type(item) is _RefreshReply:
                    await self._reply_refresh(item)
                elif type(item) is _Close:
                    await self._send_close(item.code, item.reason)
                    return
        except (OSError, RuntimeError) as error:  # uvicorn's, when the peer went away mid-send
            control = self._control
            if isinstance(error, OSError) or control is None or control.lost.is_set():
                self._stop_listening()  # nothing can reach it any more: stop queueing
                self._queue.clear()
            else:  # the peer is there: a bug of ours, and it must not hang unanswered
                log.warning("delivery failed: %r", error, extra={"bot": self.bot})
                self._loop.call_soon(self.close_now, CLOSE_INTERNAL_ERROR, REASON_INTERNAL_ERROR)
        except Exception:
            log.exception("delivery failed", extra={"bot": self.bot})
            self._loop.call_soon(self.close_now, CLOSE_INTERNAL_ERROR, REASON_INTERNAL_ERROR)
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None  # the finished task is garbage: keep nothing of it

    async def _send_text(self, text: str, received_s: float | None) -> None:
        self.send_started_s = self._loop.time()
        await self._asgi_send({"type": "websocket.send", "text": text})
        self.send_started_s = None
        metrics.SENDS.sent_one(None if received_s is None else self._loop.time() - received_s)

    async def _send_close(self, code: int, reason: str) -> None:
        """The close frame is buffered even when the peer is not reading, so a client that later
        reads learns why; `_wait_until_lost` aborts the TCP connection if it never does."""
        self._close_code = code
        if self._control is not None:
            self._control.unblock_writes()
        try:
            await self._asgi_send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError):
            pass

    async def _forward(self, refresh: Refresh) -> None:
        """SPEC 2.1 rule 7: each seq once, in order; rule 8: a new epoch is forwarded as it comes
        (the client re-inits)."""
        if refresh.epoch != self._epoch:
            self._epoch, self._next_seq = refresh.epoch, refresh.seq + 1
            await self._send_text(refresh.text, refresh.received_s)
            return
        if refresh.seq < self._next_seq:
            return
        if refresh.seq > self._next_seq:
            await self._fill(refresh.seq - 1)
        await self._send_text(refresh.text, refresh.received_s)
        self._next_seq = refresh.seq + 1

    async def _begin(self, start: _Start) -> None:
        """`init` or `resume`: the connection's place restarts (rule 7)."""
        control = self._control
        if start.init is not None and control is not None and control.write_frame(start.init.frame):
            metrics.SENDS.sent_one(None)
        else:
            await self._send_text(start.text, None)
        self._epoch, self._next_seq = start.epoch, start.seq + 1
        if start.target_seq > start.seq:
            await self._fill(start.target_seq)

    async def _reply_refresh(self, reply: _RefreshReply) -> None:
        """What the connection lacks before the newest refresh goes first (rule 9)."""
        same_epoch = reply.epoch == self._epoch
        if same_epoch and reply.seq > self._next_seq:
            await self._fill(reply.seq - 1)
        await self._send_text(reply.text, None)
        if not same_epoch or reply.seq >= self._next_seq:
            self._epoch, self._next_seq = reply.epoch, reply.seq + 1

    async def _fill(self, last_seq: int) -> None:
        """Send `_next_seq`..`last_seq` from the hub's ring, else from the log; skip only what the
        log no longer holds (SPEC 2.1 rule 7). Live refreshes keep queueing meanwhile, so a
        client that cannot take the backlog overflows its queue like any slow consumer."""
        bot, epoch = self.bot, self._epoch
        if bot is None or epoch is None:
            return
        retry_s = FILL_RETRY_FIRST_S
        while self._next_seq <= last_seq:
            batch = self._hub.ring_range(bot, epoch, self._next_seq, last_seq)
            if not batch:
                try:
                    batch = await read_log(
                        self._redis.for_bot(bot), bot, self._next_seq, last_seq, epoch
                    )
                except RedisError as error:
                    log.warning("refresh log unreadable, retrying: %s", error, extra={"bot": bot})
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, FILL_RETRY_MAX_S)
                    continue
                if not batch:
                    self._next_seq = last_seq + 1
                    return
            for refresh in batch:
                if refresh.seq >= self._next_seq:
                    await self._send_text(refresh.text, None)
                    self._next_seq = refresh.seq + 1

    # -- reader -----------------------------------------------------------------------------

    async def _on_message(self, text: str | None) -> None:
        if not self._bucket.take(self._loop.time()):  # SPEC 5.1 rule 3: before any other check
            self._fail(ClientError("rate_limited", "too many messages", CLOSE_RATE_LIMITED))
            return
        try:
            document = parse_frame(text)
            if check_action(document) == "init":
                self._stop_auth_timer()  # SPEC 2.1 rule 18: this init's answer decides
                await self._on_init(document)
            else:
                await self._on_refresh(document)
        except ClientError as error:
            if not self._closing:
                self._fail(error)

    def _check_same_key(self, key_hash: str | None) -> None:
        """On an authenticated connection, any other key is `unauthorized` (SPEC 2.1 rule 2);
        None is a key that cannot be configured, so not the connection's either."""
        if self.key_hash is not None and (
            key_hash is None or not hmac.compare_digest(key_hash, self.key_hash)
        ):
            raise unauthorized("apiKey differs from the one this connection authenticated with")

    async def _look_up(self, api_key: str) -> tuple[str, str]:
        """The key's bot and hash. `unauthorized` only once the registry has been read and the
        key found absent; `unavailable` (1013) while it does not exist or cannot be read (SPEC
        2.1 rule 18). A key that cannot be configured is not hashed, and only needs to know that
        the registry exists to be absent from it."""
        key_hash = api_key_hash(api_key) if key_could_be_configured(api_key) else None
        self._check_same_key(key_hash)
        try:
            owners = await self._registry.owners(() if key_hash is None else (key_hash,))
        except RegistryMissing:
            raise _unavailable("the registry of keys does not exist yet") from None
        except RedisError as error:
            log.warning("key lookup failed: %r", error)
            raise _unavailable("the registry of keys cannot be read now") from None
        owner = owners[0] if owners else None
        if owner is None or key_hash is None:
            raise unauthorized("apiKey is not a configured key")
        return owner, key_hash

    async def _on_init(self, document: Document) -> None:
        if self._context.failed_keys.blocked(self.address, self._loop.time()):
            raise ClientError(  # SPEC 5.1 rule 4
                "rate_limited", "too many failed keys from this address", CLOSE_RATE_LIMITED
            )
        bot, key_hash = await self._look_up(check_key_present(document))
        since, epoch = check_resume_fields(document)
        if since is not None and epoch is not None:
            if await self._try_resume(bot, key_hash, since, epoch):
                return
        try:
            built = await self._context.inits.get(bot)
        except StateMissing:
            raise _unavailable("the bot's state does not exist yet") from None
        except (RedisError, KeyError, ValueError) as error:
            log.warning("snapshot unreadable: %r", error, extra={"bot": bot})
            raise _unavailable("the bot's state cannot be read now") from None
        self._start(
            bot, key_hash, _Start("full", built.text, built.seq, built.epoch, built.seq, built)
        )

    async def _try_resume(self, bot: str, key_hash: str, since: int, epoch: str) -> bool:
        """SPEC 2.1 rule 15: same epoch, since <= N, and the log starting by since+1 (it is
        trimmed only from its old end, so holding since+1 means holding since+1..N)."""
        try:
            async with self._redis.for_bot(bot).pipeline(transaction=True) as tx:
                tx.hmget(keys.meta(bot), ["seq", "epoch"])
                tx.xrange(keys.refresh_log(bot), min=f"{since + 1}-0", count=1)
                (seq_text, current_epoch), first = await tx.execute()
        except RedisError:
            raise _unavailable("the bot's state cannot be read now") from None
        if seq_text is None or current_epoch != epoch:
            return False
        current_seq = int(seq_text)
        if since > current_seq:
            return False
        if since < current_seq and (not first or seq_of_entry_id(first[0][0]) != since + 1):
            return False
        self._start(
            bot, key_hash, _Start("resume", resume_frame(since, epoch), since, epoch, current_seq)
        )
        return True

    def _start(self, bot: str, key_hash: str, start: _Start) -> None:
        """Authenticate and subscribe in one synchronous step after the snapshot: whatever the
        hub dispatched before it is in its ring (caught up through `target_seq`), whatever after
        it is queued, so nothing published after the snapshot is missed (SPEC 2.1 rule 7)."""
        if self._closing:
            return
        if self.bot is not None and self.bot != bot:
            self._hub.unsubscribe(self.bot, self)
        latest = self._hub.latest(bot)
        if latest is not None and latest.epoch == start.epoch and latest.seq > start.target_seq:
            start = replace(start, target_seq=latest.seq)
        if not self._enqueue(start):
            return
        self.bot, self.key_hash = bot, key_hash
        self._hub.subscribe(bot, self)
        (metrics.INIT_FULL if start.mode == "full" else metrics.INIT_RESUME).inc()

    async def _on_refresh(self, document: Document) -> None:
        """SPEC 2.1 rule 9: the newest refresh from the log (Redis is the authority), else the
        newest this gateway holds; neither is `unavailable`, and the connection stays open."""
        api_key = check_key_present(document)
        bot, key_hash = self.bot, self.key_hash
        if bot is None or key_hash is None:
            raise unauthorized("send init before refresh")
        self._check_same_key(api_key_hash(api_key) if key_could_be_configured(api_key) else None)
        redis_up = True
        try:
            (owner,) = await self._registry.owners((key_hash,))
            if owner != bot:
                raise unauthorized("the apiKey is no longer configured")  # rule 16
        except RegistryMissing:
            pass  # no registry for the key to be absent from: the connection's key stands (18)
        except RedisError:
            redis_up = False  # answer from memory, without a second wait for Redis
        check_resume_fields(document)
        newest: LogEntries = []
        if redis_up:
            with contextlib.suppress(RedisError):
                newest = cast(
                    LogEntries,
                    await self._redis.for_bot(bot).xrevrange(keys.refresh_log(bot), count=1),
                )
        reply: _RefreshReply | None = None
        if newest:
            entry_id, fields = newest[0]
            text = fields.get("msg")
            head = None if text is None else refresh_head(text)
            if text is not None and head is not None:
                reply = _RefreshReply(text, seq_of_entry_id(entry_id), head[1])
        if reply is None:
            latest = self._hub.latest(bot)
            if latest is not None:
                reply = _RefreshReply(latest.text, latest.seq, latest.epoch)
        if reply is None:
            raise _unavailable("no refresh of this bot is available now", close_code=None)
        if not self._closing:
            self._enqueue(reply)
