"""uvicorn's websockets (sans-I/O) protocol plus the three transport controls ASGI lacks.

SPEC 5.1 rule 5 needs them for a client that stops reading: the `slow_consumer` close frame must be
queued even while the transport is paused (ASGI `send` would wait for it to drain, for ever), the
TCP connection aborted when that close cannot be delivered, and the end of the TCP connection
observed so drain (4.1 rule 4) knows when every close handshake is over. Everything else (1007,
1009, keepalive pings, no permessage-deflate) stays uvicorn's and the websockets library's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, cast

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

from services.gateway.lean import LeanEvent, LeanQueue

SCOPE_EXTENSION = "bandwagon.transport"
CLOSE_INVALID_UTF8 = 1007  # SPEC 2.1 rules 2 and 4

log = logging.getLogger(__name__)


def text_frame(text: str) -> bytes:
    """`text` as one whole websocket text frame from a server: unmasked, and with no extension
    negotiated (no permessage-deflate), so the same bytes serve every client."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


class TransportControl(Protocol):
    """What a connection handler may do to its transport, besides ASGI send and receive."""

    @property
    def lost(self) -> asyncio.Event: ...

    def unblock_writes(self) -> None: ...

    def abort(self) -> None: ...

    def write_frame(self, frame: bytes) -> bool: ...


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """Exposes itself as `TransportControl` under `scope["extensions"]["bandwagon.transport"]`.
    Its receive queue and events are the lean kind (`services.gateway.lean`): the same
    behaviour, some 4 KiB less per connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LeanQueue()
        self.writable = LeanEvent()
        self.writable.set()

    def handle_connect(self, event: Request) -> None:
        self._lost = LeanEvent()
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake itself was refused
        if scope is not None:
            extensions = cast(dict[str, object], scope.setdefault("extensions", {}))
            extensions[SCOPE_EXTENSION] = self

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # the handshake is over: uvicorn would keep its request and response (their
            # headers, 2 KiB) as long as the connection lives
            self.request = self.response = None  # type: ignore[assignment]

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    def send_receive_event_to_app(self) -> None:
        """Invalid UTF-8 in a text message closes 1007 as uvicorn does, without its ERROR line
        and traceback: bad input from a client is not a server error, and any client could
        otherwise write tracebacks into the logs at will (SPEC section 5)."""
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                self.frames = []
                log.debug("invalid UTF-8 from a client: closing %d", CLOSE_INVALID_UTF8)
                self.conn.send_close(CLOSE_INVALID_UTF8)
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        lost = getattr(self, "_lost", None)
        if lost is not None:
            lost.set()

    def unblock_writes(self) -> None:
        """Let the next ASGI send (the final close frame) be buffered although the peer is not
        reading. Only for the close: the caller has already stopped its writer task."""
        self.writable.set()

    def abort(self) -> None:
        self.transport.abort()

    def write_frame(self, frame: bytes) -> bool:
        """Put a whole serialized frame on the wire now, as uvicorn's `websocket.send` would
        (minus encoding and framing it again for this connection), if nothing stands in the
        way: the connection open, no close sent, the transport not paused by flow control.
        False means nothing was written; the caller then queues the frame's message."""
        if (
            self.close_sent
            or not self.writable.is_set()
            or self.transport.is_closing()
            or self.conn.state is not State.OPEN
        ):
            return False
        self.transport.write(frame)
        return True


def transport_control(scope: object) -> TransportControl | None:
    """The controls, when the server runs `GatewayWebSocketProtocol` (tests may run others)."""
    if not isinstance(scope, dict):
        return None
    extensions = scope.get("extensions") or {}
    control = extensions.get(SCOPE_EXTENSION) if isinstance(extensions, dict) else None
    return cast(TransportControl, control) if control is not None else None
