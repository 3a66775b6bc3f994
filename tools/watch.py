"""`bandwagon watch`: a small Status API client that prints a bot's refreshes, one line each.

It is also a reference for client writers: `Follower` is SPEC 2.1 rule 8 as a sans-IO state
machine (apply seq last+1 of the same epoch, ignore older ones, re-send `init` with `since` on a gap
or a new epoch and discard until the reply), and `watch` adds rule 4's reconnects: never after
4401 with the same key, at least 60 s after 1008, else 1 s doubling to 30 s with full jitter.

The key comes from `--key`, else $BOT_API_KEY, else `.run/demo-api-key` (the demo's); it is never
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from rich.console import Console
from rich.text import Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
DEMO_KEY_FILE = Path(".run/demo-api-key")
CLOSE_UNAUTHORIZED = 4401  # SPEC 2.1 rule 4: do not reconnect with the same key
CLOSE_RATE_LIMITED = 1008  # wait at least 60 s
RATE_LIMITED_WAIT_S = 60.0
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
MAX_FRAME_BYTES = 64 * 1024 * 1024  # an init of 50 symbols with full histories fits
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

Frame = dict[str, Any]


class Verdict(Enum):
    """What the connection loop does with a server message."""

    SNAPSHOT = "snapshot"  # a full init: print its summary
    RESUMED = "resumed"  # a resume: the refreshes after `since` follow
    APPLY = "apply"  # the next refresh: print it
    IGNORE = "ignore"  # an old refresh (seq <= last), or one while awaiting the init reply
    RESYNC = "resync"  # a gap or a new epoch: send `resync_request()`
    ERROR = "error"  # an error frame: print it
    UNKNOWN = "unknown"  # not a message of the protocol


@dataclass
class Follower:
    """Which refresh may be applied next (SPEC 2.1 rules 7, 8 and 15). No IO."""

    epoch: str | None = None
    seq: int | None = None
    awaiting_reply: bool = False

    def init_request(self, api_key: str) -> Frame:
        """`init`, with `since` and `epoch` once a history is known, so the gateway can resume."""
        self.awaiting_reply = True
        frame: Frame = {"action": "init", "apiKey": api_key}
        if self.seq is not None and self.epoch is not None:
            frame.update(since=self.seq, epoch=self.epoch)
        return frame

    def on_message(self, message: object) -> Verdict:
        if not isinstance(message, dict):
            return Verdict.UNKNOWN
        action = message.get("action")
        seq, epoch = message.get("seq"), message.get("epoch")
        if action == "error":
            return Verdict.ERROR
        if action not in ("init", "resume", "refresh") or not isinstance(epoch, str):
            return Verdict.UNKNOWN
        if not isinstance(seq, int) or isinstance(seq, bool):
            return Verdict.UNKNOWN
        if action in ("init", "resume"):
            self.seq, self.epoch, self.awaiting_reply = seq, epoch, False
            return Verdict.SNAPSHOT if action == "init" else Verdict.RESUMED
        if self.awaiting_reply or self.seq is None:
            return Verdict.IGNORE  # rule 8: discard until the reply to our init
        if epoch != self.epoch or seq > self.seq + 1:
            return Verdict.RESYNC
        if seq <= self.seq:
            return Verdict.IGNORE
        self.seq = seq
        return Verdict.APPLY


@dataclass
class Reconnect:
    """SPEC 2.1 rule 4: 1 s doubling to 30 s, full jitter; back to 1 s after a successful init."""

    attempt: int = 0

    def next_delay_s(self) -> float:
        ceiling = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**self.attempt)
        self.attempt += 1
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Unauthorized(Exception):
    """Closed with 4401: the key is wrong; retrying with it is pointless (and refused)."""


# -- what is printed -----------------------------------------------------------------------------


def _number(value: object, signed_decimals: int | None = None) -> str:
    """As the server sent it (prices keep their digits), or signed with fixed decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    return str(value) if signed_decimals is None else f"{value:+.{signed_decimals}f}"


def _signed(text: Text, label: str, value: object) -> None:
    style = ""
    if isinstance(value, int | float) and not isinstance(value, bool) and value:
        style = "green" if value > 0 else "red"
    text.append(f"{label} ")
    text.append(_number(value, 2), style=style)


_SIGNAL_STYLES = {"buying": "green", "bought": "bold green", "selling": "red", "sold": "bold red"}


def _symbols_text(text: Text, symbols: object) -> None:
    for symbol in symbols if isinstance(symbols, list) else []:
        if not isinstance(symbol, dict):
            continue
        text.append(f"  {symbol.get('product_id', '?')} ", style="bold")
        text.append(_number(symbol.get("price")))
        signal = symbol.get("signal")
        if isinstance(signal, str):
            text.append(f" {signal}", style=_SIGNAL_STYLES.get(signal, ""))


def _status_text(text: Text, status: object) -> None:
    if not isinstance(status, dict):
        return
    text.append("  | ")
    text.append(f"totalCapital {_number(status.get('totalCapital'))}  ")
    _signed(text, "usdtProfit", status.get("usdtProfit"))
    text.append(f"  win {_number(status.get('win'))} lost {_number(status.get('lost'))}")


def snapshot_line(message: Frame) -> Text:
    """One line for an init: seq, epoch, symbols and their prices, totalCapital."""
    text = Text()
    text.append("init", style="bold cyan")
    text.append(f" seq {message.get('seq')} epoch {message.get('epoch')}")
    _symbols_text(text, message.get("symbols"))
    status = message.get("status")
    if isinstance(status, dict):
        text.append(f"  | totalCapital {_number(status.get('totalCapital'))}")
        text.append(f"  trades {_number(status.get('tradeNum'))}")
    return text


def refresh_lines(message: Frame) -> list[Text]:
    """One line for a refresh (seq, each symbol's price and signal, the status), then one per new
    trade: a refresh's `trades` hold only the fills since the previous one (SPEC 2.1 rule 11)."""
    data = message.get("data")
    data = data if isinstance(data, dict) else {}
    line = Text()
    line.append(f"#{message.get('seq')}", style="bold")
    _symbols_text(line, data.get("symbols"))
    _status_text(line, data.get("status"))
    lines = [line]
    symbols = data.get("symbols")
    for symbol in symbols if isinstance(symbols, list) else []:
        trades = symbol.get("trades") if isinstance(symbol, dict) else None
        for trade in trades if isinstance(trades, list) else []:
            if not isinstance(trade, dict):
                continue
            side = str(trade.get("type", "?"))
            row = Text("    trade ")
            row.append(f"{symbol.get('product_id', '?')} #{trade.get('order_id')} ")
            row.append(side, style="green" if side == "buy" else "red")
            row.append(f" {trade.get('size')} @ {trade.get('price')} {trade.get('order_type')}")
            row.append(f" {trade.get('action')}  ")
            _signed(row, "usdtProfit", trade.get("usdtProfit"))
            lines.append(row)
    return lines


# -- the connection loop -------------------------------------------------------------------------


class Watcher:
    def __init__(self, url: str, api_key: str, count: int | None, console: Console) -> None:
        self.url = url
        self.api_key = api_key
        self.count = count
        self.console = console
        self.follower = Follower()
        self.applied = 0

    def say(self, text: str | Text, style: str = "") -> None:
        stamp = Text(time.strftime("%H:%M:%S "), style="dim")
        self.console.print(stamp + (text if isinstance(text, Text) else Text(text, style=style)))

    def _done(self) -> bool:
        return self.count is not None and self.applied >= self.count

    async def session(self, connection: ClientConnection, reconnect: Reconnect) -> bool:
        """One connection: init, then refreshes. True when `--count` is reached."""
        await connection.send(json.dumps(self.follower.init_request(self.api_key)))
        async for raw in connection:
            try:
                message = json.loads(raw)
            except ValueError:
                self.say("ignored a frame that is not JSON", style="yellow")
                continue
            verdict = self.follower.on_message(message)
            if verdict is Verdict.SNAPSHOT:
                reconnect.reset()
                self.say(snapshot_line(message))
                if self._done():
                    return True
            elif verdict is Verdict.RESUMED:
                reconnect.reset()
                self.say(f"resumed at seq {message['seq']}: the refreshes after it follow")
            elif verdict is Verdict.APPLY:
                for line in refresh_lines(message):
                    self.say(line)
                self.applied += 1
                if self._done():
                    return True
            elif verdict is Verdict.RESYNC:
                last = self.follower.seq
                why = (
                    f"new epoch {message.get('epoch')}"
                    if message.get("epoch") != self.follower.epoch
                    else f"gap: seq {message.get('seq')} after {last}"
                )
                self.say(f"{why}; sending init with since={last}", style="yellow")
                await connection.send(json.dumps(self.follower.init_request(self.api_key)))
            elif verdict is Verdict.ERROR:
                self.say(f"error {message.get('code')}: {message.get('message')}", style="red")
            elif verdict is Verdict.UNKNOWN:
                self.say(f"ignored a message: {str(raw)[:80]}", style="yellow")
        return False

    async def run(self) -> int:
        reconnect = Reconnect()
        proxy: Literal[True] | None = None if urlsplit(self.url).hostname in _LOOPBACK else True
        while True:
            code: int | None = None
            reason = ""
            try:
                async with connect(
                    self.url,
                    compression=None,  # SPEC 2.1 rule 17: not negotiated
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=10,
                    proxy=proxy,
                ) as connection:
                    self.say(f"connected to {self.url}", style="dim")
                    if await self.session(connection, reconnect):
                        return 0
                    code, reason = connection.close_code, connection.close_reason or ""
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                reason = closed.rcvd.reason if closed.rcvd is not None else "no close frame"
            except InvalidURI as error:
                self.say(f"bad --url: {error}", style="red")
                return 2
            except (OSError, InvalidHandshake, TimeoutError) as error:
                reason = f"cannot connect: {error or type(error).__name__}"
            if code == CLOSE_UNAUTHORIZED:
                self.say("closed 4401 unauthorized: check the key; not retrying", style="red")
                return 1
            if code == CLOSE_RATE_LIMITED:
                delay_s = RATE_LIMITED_WAIT_S + reconnect.next_delay_s()
            else:
                delay_s = reconnect.next_delay_s()
            closed_how = f"closed {code}" if code is not None else "disconnected"
            self.say(
                f"{closed_how}{f' ({reason})' if reason else ''}; reconnecting in {delay_s:.1f} s",
                style="yellow",
            )
            await asyncio.sleep(delay_s)


def _api_key(flag: str | None) -> str | None:
    if flag:
        return flag
    if os.environ.get("BOT_API_KEY"):
        return os.environ["BOT_API_KEY"]
    if DEMO_KEY_FILE.exists():
        return DEMO_KEY_FILE.read_text(encoding="ascii", errors="replace").strip() or None
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bandwagon watch",
        description="Print a bot's Status API stream: the init summary, then a line per refresh.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument(
        "--key", help="the bot's apiKey; default $BOT_API_KEY, else .run/demo-api-key"
    )
    parser.add_argument(
        "--count", type=int, metavar="N", help="exit after N refreshes (0: after the init)"
    )
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 0:
        parser.error("--count must be >= 0")
    api_key = _api_key(args.key)
    if api_key is None:
        print("bandwagon watch: no key: pass --key or set BOT_API_KEY", file=sys.stderr)
        return 2
    console = Console(highlight=False, soft_wrap=True)
    return asyncio.run(Watcher(args.url, api_key, args.count, console).run())
