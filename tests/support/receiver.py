"""A real webhook receiver and a Telegram Bot API stand-in for the notify tests: HTTP servers
(uvicorn) in the test process, on loopback, that check every signature against the secret and
record what arrived. A test sets `behaviour` to make them fail, hang or redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from tools.run.redis_server import free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at_s: float  # monotonic, when the request was complete

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False  # never answer (the connection stays open until the client gives up)


Behaviour = Callable[[Request], Reply]


def always_ok(_: Request) -> Reply:
    return Reply()


class _QuietServer(uvicorn.Server):
    """Leaves SIGINT and SIGTERM to the test process (uvicorn would take them over)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Receiver:
    """Records every request; `accepted` are those answered 2xx, in arrival order."""

    secret: str = ""
    behaviour: Behaviour = always_ok
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    accepted: list[Request] = field(default_factory=list)
    bad_signatures: list[Request] = field(default_factory=list)
    closed_after_s: list[float] = field(default_factory=list)  # hung requests: when the client left
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signature_ok(self, request: Request) -> bool:
        expected = (
            "sha256=" + hmac.new(self.secret.encode(), request.body, hashlib.sha256).hexdigest()
        )
        return hmac.compare_digest(request.headers.get("x-bandwagon-signature", ""), expected)

    def accepted_ids(self) -> list[str]:
        return [request.headers["x-bandwagon-id"] for request in self.accepted]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Request(
            path=scope["path"],
            query=scope["query_string"].decode(),
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=body,
            at_s=time.monotonic(),
        )
        self.requests.append(request)
        if self.secret and not self.signature_ok(request):
            self.bad_signatures.append(request)
        reply = self.behaviour(request)
        if reply.hang:
            started = time.monotonic()
            while (await receive())["type"] != "http.disconnect":
                pass
            self.closed_after_s.append(time.monotonic() - started)
            return
        if 200 <= reply.status < 300:
            self.accepted.append(request)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in reply.headers],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    async def start(self) -> Receiver:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)


def telegram_messages(receiver: Receiver) -> list[dict[str, Any]]:
    """The `sendMessage` calls a Telegram stand-in accepted, as the JSON sent."""
    return [request.json() for request in receiver.accepted]


def telegram_ok(_: Request) -> Reply:
    return Reply(200, orjson.dumps({"ok": True, "result": {"message_id": 1}}))


def telegram_429(retry_after_s: int) -> Reply:
    return Reply(
        429,
        orjson.dumps(
            {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {retry_after_s}",
                "parameters": {"retry_after": retry_after_s},
            }
        ),
    )
