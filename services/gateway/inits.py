"""Init texts built once per (bot, epoch, seq) and shared by every client that asks meanwhile.

An `init` of 3 symbols x 300 klines + 500 trades is ~0.8 MB of JSON, about 4 ms to read and build.
When a gateway restarts, or a network blip drops them, hundreds of a bot's clients init at once,
all at the same seq: building each of them is the same work a hundred times over. The state at
(epoch, seq) never changes (a new history gets a new epoch, SPEC 2.1 rules 5 and 8), so the text
built for it is the answer for everyone asking at that point; the frame bytes too, built once.

Freshness stays that of a lone init: each request first reads the bot's current (epoch, seq,
display), one small round trip, and takes a shared text only when it is of that epoch and
display and at least that seq; otherwise it reads and builds its own snapshot (2.1 rule 6: the
init is a consistent snapshot at its seq, read in one MULTI).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

from redis.asyncio import Redis

from libs.errors import StateMissing
from libs.store import keys
from libs.store.client import RedisNodes
from libs.store.published import init_message, read_snapshot
from services.gateway.wsprotocol import text_frame


@dataclass(slots=True, eq=False, weakref_slot=True)
class BuiltInit:
    seq: int
    epoch: str
    display: str  # meta `display` (kline and trade history...): a restart may change it
    text: str
    _frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The init as one websocket text frame, the same bytes for every client."""
        if self._frame is None:
            self._frame = text_frame(self.text)
        return self._frame

    def serves(self, epoch: str, seq: int, display: str) -> bool:
        return self.epoch == epoch and self.seq >= seq and self.display == display


class InitCache:
    """The newest init built per bot, for as long as some connection still holds it (a weak
    reference: a quiet bot's 0.8 MB goes once its last init is sent), and the build in flight
    per bot."""

    def __init__(self, redis: Redis | RedisNodes) -> None:
        self._nodes = RedisNodes.wrapping(redis)
        self._newest: weakref.WeakValueDictionary[str, BuiltInit] = weakref.WeakValueDictionary()
        self._building: dict[str, asyncio.Future[BuiltInit | None]] = {}

    async def get(self, bot: str) -> BuiltInit:
        """The bot's init as of now or later. Raises StateMissing, RedisError, KeyError or
        ValueError as `read_snapshot` does."""
        seq_text, epoch, display = await self._nodes.for_bot(bot).hmget(
            keys.meta(bot), ["seq", "epoch", "display"]
        )
        if seq_text is None or epoch is None or display is None:
            raise StateMissing(bot)
        seq, epoch, display = int(seq_text), str(epoch), str(display)
        newest = self._newest.get(bot)
        if newest is not None and newest.serves(epoch, seq, display):
            return newest
        building = self._building.get(bot)
        if building is not None:
            shared = await asyncio.shield(building)  # None: that build failed, try our own
            if shared is not None and shared.serves(epoch, seq, display):
                return shared
        return await self._build(bot)

    async def _build(self, bot: str) -> BuiltInit:
        future: asyncio.Future[BuiltInit | None] = asyncio.get_running_loop().create_future()
        self._building[bot] = future
        built: BuiltInit | None = None
        try:
            snapshot = await read_snapshot(self._nodes.for_bot(bot), bot)
            text = init_message(snapshot).decode()
            display_now = snapshot.display.to_json().decode()
            built = BuiltInit(snapshot.seq, snapshot.epoch, display_now, text)
        finally:
            future.set_result(built)
            if self._building.get(bot) is future:
                del self._building[bot]
        newest = self._newest.get(bot)
        if newest is None or newest.epoch != built.epoch or newest.seq <= built.seq:
            self._newest[bot] = built
        return built
