"""The fan-out bench's two reference servers, each subscribed to the same refresh channel as the
gateway and forwarding the same published bytes to every client that sent a message:

- `plain`: the `websockets` library alone (its asyncio server and `broadcast`): the ceiling of
  a Python websocket fan-out on this machine;
- `fastapi`: the FastAPI documentation's pattern under uvicorn, `for ws in clients: await
  ws.send_text(text)`: what a user would write instead.

    python -m benches.fanout_servers plain|fastapi --port P --redis-url URL --bot BOT

Both answer a client's first message with a short `{"action":"init"}` (no snapshot: this is the
steady-state fan-out only) and stop on SIGTERM. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from redis.asyncio import Redis

from benches.loadgen_stats import raise_open_files
from libs.ops.health import ServerWithoutSignals
from libs.store import keys

ACK = '{"action":"init"}'


async def refreshes(redis_url: str, bot: str) -> Any:
    """Every refresh text published for `bot`, as str."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.refresh_channel(bot))
    async for message in pubsub.listen():
        if message["type"] == "message":
            yield message["data"]


async def plain(port: int, redis_url: str, bot: str, stop: asyncio.Event) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(ACK)
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def forward() -> None:
        async for text in refreshes(redis_url, bot):
            broadcast(clients, text)

    async with serve(handler, "127.0.0.1", port, backlog=4096, compression=None, max_size=2**16):
        task = asyncio.create_task(forward())
        await stop.wait()
        task.cancel()


def fastapi_app(redis_url: str, bot: str) -> Any:
    app = FastAPI()  # WebSocket is imported at module level: FastAPI resolves the annotation
    clients: list[WebSocket] = []

    async def forward() -> None:
        async for text in refreshes(redis_url, bot):
            for ws in list(clients):  # the FastAPI docs' ConnectionManager.broadcast
                try:
                    await ws.send_text(text)
                except Exception:  # a gone client, as the docs' manager does
                    if ws in clients:
                        clients.remove(ws)

    started: list[asyncio.Task[None]] = []

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        if not started:
            started.append(asyncio.create_task(forward()))
        await websocket.accept()
        await websocket.receive_text()
        await websocket.send_text(ACK)
        clients.append(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            if websocket in clients:
                clients.remove(websocket)

    return app


async def fastapi(port: int, redis_url: str, bot: str, stop: asyncio.Event) -> None:
    import uvicorn

    config = uvicorn.Config(
        fastapi_app(redis_url, bot),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        backlog=4096,
        ws_per_message_deflate=False,
        lifespan="off",
    )
    server = ServerWithoutSignals(config)  # SIGTERM is this process's, as the gateway's
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.fanout_servers", description=__doc__)
    parser.add_argument("kind", choices=("plain", "fastapi"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--bot", required=True)
    args = parser.parse_args(argv)
    raise_open_files()
    import uvloop

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        serve = plain if args.kind == "plain" else fastapi
        await serve(args.port, args.redis_url, args.bot, stop)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
