"""A lean websocket client load generator: many clients in one process, raw asyncio protocols and
a minimal RFC 6455 client (handshake, unmasked server frames, masked client frames, pong, close).
No per-message JSON: a refresh's seq is read from its fixed prefix `{"action":"refresh","seq":`.

    python -m benches.loadgen steady --url ws://127.0.0.1:PORT/ws --key KEY --clients N --out F
    python -m benches.loadgen init --url ... --key KEY --sequential N --burst B --out F

`steady`: connects N clients (at most `--connect-concurrency` handshakes at a time), sends each
one `init`, prints `{"ready": n}` once every client has its first reply, then records every text
frame (client, seq, receive time in CLOCK_MONOTONIC ns) until a `stop` line on stdin or
`--max-seconds`, and writes them (npz) with a summary (closes, errors, own CPU seconds).
`init`: N connections one after another, then B at once; each times connect -> init reply.

Loopback only; every run stops by itself at `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import numpy as np
import orjson

from benches.loadgen_stats import own_cpu_seconds, raise_open_files

REFRESH_PREFIX = b'{"action":"refresh","seq":'
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 5.3). The mask is random per frame."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    if payload:
        repeated = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            length, "big"
        )
    else:
        masked = b""
    return head + mask + masked


def seq_of(payload: bytes) -> int:
    """The seq of a refresh frame, -1 for any other message."""
    if not payload.startswith(REFRESH_PREFIX):
        return -1
    start = len(REFRESH_PREFIX)
    end = payload.find(b",", start)
    return int(payload[start:end])


@dataclass
class Recorder:
    """What every client of the process saw, in flat arrays (cheap to append, cheap to save)."""

    clients: array[int] = field(default_factory=lambda: array("q"))
    seqs: array[int] = field(default_factory=lambda: array("q"))
    times_ns: array[int] = field(default_factory=lambda: array("q"))
    closes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    replies: int = 0
    reply_ns: list[int] = field(default_factory=list)  # connect start -> first reply, per client

    def close(self, code: int) -> None:
        self.closes[str(code)] = self.closes.get(str(code), 0) + 1


class Client(asyncio.Protocol):
    """One websocket client. The first complete message after `init` is its reply; later text
    frames are recorded with their seq."""

    def __init__(self, index: int, host: str, path: str, init: bytes, record: Recorder) -> None:
        self.index = index
        self.host = host
        self.path = path
        self.init = init
        self.record = record
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.started_ns = time.monotonic_ns()
        self.replied = asyncio.get_running_loop().create_future()
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def send_init(self) -> None:
        if self.transport is not None and not self.gone:
            self.started_ns = min(self.started_ns, time.monotonic_ns())
            self.transport.write(client_frame(OP_TEXT, self.init))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.record.close(int(status.split()[1]) if len(status.split()) > 1 else 0)
                self._fail()
                return
            self.upgraded = True
            self.send_init()
        now_ns = time.monotonic_ns()
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length, start = second & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(first & 0x0F, bool(first & 0x80), payload, now_ns)

    def _frame(self, opcode: int, fin: bool, payload: bytes, now_ns: int) -> None:
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if not fin:
                self.fragments.append(payload)
                return
            if self.fragments:
                payload = b"".join([*self.fragments, payload])
                self.fragments = []
            if not self.replied.done():
                self.record.replies += 1
                self.record.reply_ns.append(now_ns - self.started_ns)
                if payload.startswith(b'{"action":"error"'):
                    self.record.errors += 1
                self.replied.set_result(None)
                return
            seq = seq_of(payload)
            if seq < 0:
                self.record.errors += 1
                return
            record = self.record
            record.clients.append(self.index)
            record.seqs.append(seq)
            record.times_ns.append(now_ns)
        elif opcode == OP_PING and self.transport is not None:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.record.close(code)
            self._fail()

    def _fail(self) -> None:
        self.gone = True
        if not self.replied.done():
            self.replied.set_result(None)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone:
            self.record.close(1006)
        self.gone = True
        if not self.replied.done():
            self.replied.set_result(None)

    def abort(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.abort()


async def open_client(
    index: int, url: str, init: bytes, record: Recorder, timeout_s: float
) -> Client | None:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    client = Client(index, f"{host}:{port}", parts.path or "/", init, record)
    try:
        await asyncio.wait_for(loop.create_connection(lambda: client, host, port), timeout_s)
    except (OSError, TimeoutError):
        record.close(1006)
        return None
    return client


async def wait_stop(max_seconds: float) -> None:
    """A `stop` line (or EOF) on stdin, or the deadline."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await asyncio.wait_for(reader.readline(), max_seconds)
    except TimeoutError:
        pass


def say(document: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    sys.stdout.flush()


async def steady(args: argparse.Namespace) -> None:
    record = Recorder()
    init = orjson.dumps({"action": "init", "apiKey": args.key})
    gate = asyncio.Semaphore(args.connect_concurrency)
    clients: list[Client] = []
    deadline = time.monotonic() + args.max_seconds

    async def one(index: int) -> None:
        async with gate:
            client = await open_client(index, args.url, init, record, 30.0)
            if client is None:
                return
            clients.append(client)
            try:
                await asyncio.wait_for(asyncio.shield(client.replied), 60.0)
            except TimeoutError:
                pass

    first = args.first_index
    await asyncio.gather(*(one(first + i) for i in range(args.clients)))
    say({"ready": record.replies, "closes": record.closes})
    await wait_stop(max(1.0, deadline - time.monotonic()))
    await finish(clients, record, args.out)


async def finish(clients: Sequence[Client], record: Recorder, out: str) -> None:
    """Drop every client, save what `record` holds to `out` (.npz) and say it is done: the
    parent reads the file once it sees `done`."""
    for client in clients:
        client.abort()
    await asyncio.sleep(0.05)
    np.savez(
        out,
        clients=np.frombuffer(record.clients, dtype=np.int64),
        seqs=np.frombuffer(record.seqs, dtype=np.int64),
        times_ns=np.frombuffer(record.times_ns, dtype=np.int64),
    )
    say(
        {
            "done": True,
            "closes": record.closes,
            "errors": record.errors,
            "cpu_s": own_cpu_seconds(),
            "records": len(record.seqs),
        }
    )


def save(path: str, data: bytes) -> None:
    Path(path).write_bytes(data)


async def init_times(args: argparse.Namespace) -> None:
    """Sequential inits (one connection at a time), then a burst of `--burst` at once; each
    timed from the connect to the complete init reply."""
    init = orjson.dumps({"action": "init", "apiKey": args.key})
    sequential = Recorder()
    for index in range(args.sequential):
        client = await open_client(index, args.url, init, sequential, 10.0)
        if client is not None:
            await asyncio.wait_for(asyncio.shield(client.replied), 10.0)
            client.abort()
    burst = Recorder()
    opened = await asyncio.gather(
        *(open_client(i, args.url, init, burst, 30.0) for i in range(args.burst))
    )
    for client in opened:
        if client is not None:
            try:
                await asyncio.wait_for(asyncio.shield(client.replied), 30.0)
            except TimeoutError:
                pass
            client.abort()
    save(
        args.out,
        orjson.dumps(
            {
                "sequential_ns": sequential.reply_ns,
                "burst_ns": burst.reply_ns,
                "errors": sequential.errors + burst.errors,
                "closes": {**sequential.closes, **burst.closes},
            }
        ),
    )
    say({"done": True})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.loadgen", description=__doc__)
    parser.add_argument("mode", choices=("steady", "init"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not (urlsplit(args.url).hostname or "").startswith("127."):
        parser.error("loopback only")
    raise_open_files()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(steady(args) if args.mode == "steady" else init_times(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
