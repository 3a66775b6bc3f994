"""Starting Bandwagon's services as real processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from libs.store import keys
from tests.support.polling import eventually, wait_until
from tools.run.redis_server import free_port, user_env

REPO = Path(__file__).parents[2]


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    health_url: str
    log_path: Path

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.health_url}/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        """Ready within `timeout_s`; exiting meanwhile fails at once, with the log."""

        def ready() -> bool:
            if self.ready():
                return True
            code = self.process.poll()
            assert code is None, f"{self.name} exited {code}:\n{self.log()}"
            return False

        wait_until(
            ready, timeout_s=timeout_s, poll_s=0.1, what=lambda: f"{self.name} ready:\n{self.log()}"
        )

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait: a service must drain and exit 0 on its own (SPEC 4.1 rule 4)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9


@dataclass
class Deployment:
    """The four services of one test, all on one private redis-server."""

    redis_url: str
    config_path: Path
    log_dir: Path
    api_key: str
    gateway_port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)
    passwords: Mapping[str, str] | None = None
    """The Redis server's ACL users (`RedisServer.passwords`): each service connects as its own
    user (SPEC 4.1 rule 14); None: as the default user."""

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ws"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis_url,
            BANDWAGON_CONFIG=str(self.config_path),
            BOT_API_KEY=self.api_key,
            GATEWAY_PORT=str(self.gateway_port),
            PYTHONUNBUFFERED="1",
            TZ="UTC",
        )
        env.update(extra)
        return env

    def start(self, name: str, *args: str, replica: str | None = None, **env: str) -> Service:
        """Start `bandwagon NAME ARGS`; `replica` names a further process of the same service
        (its own log, health port and, for a gateway, its own listening port)."""
        label = replica or name
        if name == "gateway":
            port = self.gateway_port if replica is None else free_port()
            health_url = f"http://127.0.0.1:{port}"
            port_env: dict[str, str] = {"GATEWAY_PORT": str(port)}
        else:
            port = free_port()
            health_url = f"http://127.0.0.1:{port}"
            port_env = {"HEALTH_PORT": str(port)}
        log_path = self.log_dir / f"{label}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", name, *args],
                env=self.env(
                    **{"WORKER_ID": label, **port_env, **user_env(self.passwords, name), **env}
                ),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = Service(label, process, health_url, log_path)
        self.services[label] = service
        return service

    def wait_ready(self, *names: str, timeout_s: float = 30.0) -> None:
        """Each named service ready in turn, all within `timeout_s`; one that exits meanwhile
        fails the wait at once, with its log."""
        deadline = time.monotonic() + timeout_s
        for name in names:
            self.services[name].wait_ready(max(0.0, deadline - time.monotonic()))

    def stop_all(self) -> dict[str, int]:
        return {name: service.stop() for name, service in reversed(self.services.items())}


def backtest_json(config: Path, bot: str, files: list[str], out: Path) -> dict[str, Any]:
    """`bandwagon backtest --json` on the same bots file and data (`--klines=PID=FILE`...), with
    TZ=UTC like the deployment: the uninterrupted reference the live pipeline must equal."""
    command = [sys.executable, "-m", "tools.cli", "backtest", "--config", str(config)]
    done = subprocess.run(
        [*command, "--bot", bot, *files, "--json", str(out), "--quiet"],
        cwd=REPO,
        env={**os.environ, "TZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = orjson.loads(out.read_bytes())
    return document


# -- gateway process figures and a well-behaved client, for the hostile-input, isolation,
# -- many-gateway and soak tests ------------------------------------------------------------------


def ws_url_of(service: Service) -> str:
    """The websocket URL of a gateway process (its health URL is on the same port)."""
    return service.health_url.replace("http://", "ws://", 1) + "/ws"


def process_fds(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def process_rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def process_sockets_on_port(pid: int, port: int) -> int:
    """TCP sockets of the process whose local port is `port`, the listener excluded: its open
    websocket (and HTTP) connections, whatever their state."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    owned = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            owned += 1
    return owned


def scrape_metrics(service: Service) -> str:
    with urllib.request.urlopen(f"{service.health_url}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of a Prometheus text exposition, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, label_text = sample.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if sample_name == name and found == labels:
            return float(value)
    return 0.0


def log_texts(log_dir: Path) -> dict[str, str]:
    """Every service log of a deployment, by file name."""
    return {path.name: path.read_text(errors="replace") for path in sorted(log_dir.glob("*.log"))}


@dataclass
class Watcher:
    """A well-behaved websocket client written from SPEC 2.1 rules 4, 7, 8 and 15: `init`, then
    every refresh; a gap or a lost connection makes it send `init` again with `since` and
    `epoch` (on the next URL of `urls` after a close). It records what it saw, to be checked."""

    urls: list[str]
    api_key: str
    keep_texts: bool = False
    backoff_s: float = 0.2
    epoch: str | None = None
    first_seq: int | None = None
    last_seq: int = 0
    received: list[int] = field(default_factory=list)  # refresh seqs applied, in order
    digests: dict[int, int] = field(default_factory=dict)  # seq -> crc32 of its exact text
    texts: dict[int, str] = field(default_factory=dict)  # seq -> text, when keep_texts
    full_inits: list[int] = field(default_factory=list)  # seq of each full `init`
    resumes: list[int] = field(default_factory=list)  # seq of each `resume`
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (expected, got)
    stale: int = 0  # refreshes with seq <= last, ignored (rule 8)
    errors: list[str] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)  # closes seen, 1006: no frame
    connects: int = 0
    url_index: int = 0

    @property
    def url(self) -> str:
        return self.urls[self.url_index % len(self.urls)]

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set; reconnect with a short backoff after any close."""
        while not stop.is_set():
            try:
                async with ws_connect(
                    self.url, max_size=2**26, open_timeout=5, close_timeout=2
                ) as ws:
                    self.connects += 1
                    await self._session(ws, stop)
                    if stop.is_set():
                        return
            except ConnectionClosed as closed:
                rcvd = closed.rcvd
                self.closes.append((1006, "") if rcvd is None else (rcvd.code, rcvd.reason))
            except (OSError, InvalidHandshake, TimeoutError):
                self.closes.append((1006, "connect failed"))
            self.url_index += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.backoff_s)

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        await self._send_init(ws)
        awaiting_reply = True
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            assert isinstance(text, str), "the server sends text frames only"
            message = orjson.loads(text)
            action = message["action"]
            if action == "init":
                if self.first_seq is None:
                    self.first_seq = message["seq"]
                self.epoch, self.last_seq = message["epoch"], message["seq"]
                self.full_inits.append(message["seq"])
                awaiting_reply = False
            elif action == "resume":
                assert (message["seq"], message["epoch"]) == (self.last_seq, self.epoch), message
                self.resumes.append(message["seq"])
                awaiting_reply = False
            elif action == "error":
                self.errors.append(message["code"])
            elif action == "refresh" and not awaiting_reply:
                seq = message["seq"]
                if message["epoch"] == self.epoch and seq == self.last_seq + 1:
                    self.last_seq = seq
                    self.received.append(seq)
                    self.digests[seq] = zlib.crc32(text.encode())
                    if self.keep_texts:
                        self.texts[seq] = text
                elif message["epoch"] == self.epoch and seq <= self.last_seq:
                    self.stale += 1
                else:  # a gap or a new epoch: init again, discard until the reply (rule 8)
                    self.gaps.append((self.last_seq + 1, seq))
                    await self._send_init(ws)
                    awaiting_reply = True

    async def _send_init(self, ws: ClientConnection) -> None:
        request: dict[str, object] = {"action": "init", "apiKey": self.api_key}
        if self.epoch is not None:
            request.update(since=self.last_seq, epoch=self.epoch)
        await ws.send(orjson.dumps(request).decode())

    async def reach(self, seq: int, timeout_s: float) -> None:
        """Wait until this client has applied refresh `seq` (or a later init)."""
        await eventually(
            lambda: self.last_seq >= seq,
            timeout_s=timeout_s,
            poll_s=0.05,
            what=lambda: f"seq {seq}; the client is stuck at seq {self.last_seq}: {self}",
        )

    def missing(self, final_seq: int) -> list[int]:
        """Seqs after the first init up to `final_seq` neither received nor covered by a later
        full `init` (whose snapshot includes every seq up to its own)."""
        assert self.first_seq is not None, "never initialized"
        covered = max(self.full_inits)
        seen = set(self.received)
        wanted = range(max(self.first_seq, covered) + 1, final_seq + 1)
        return [seq for seq in wanted if seq not in seen]

    def report(self) -> str:
        return (
            f"seqs {self.first_seq}..{self.last_seq} ({len(self.received)} refreshes), "
            f"inits {self.full_inits[:5]}, resumes {self.resumes[:5]}, gaps {self.gaps[:5]}, "
            f"closes {self.closes[:5]}, errors {self.errors[:5]}, connects {self.connects}"
        )

    def __repr__(self) -> str:  # the dataclass's would print every seq and text
        return f"Watcher({self.report()})"


async def bot_seq(redis: Redis, bot: str) -> int:
    """The bot's last published refresh seq (meta `seq`), 0 before its state exists."""
    seq = await redis.hget(keys.meta(bot), "seq")
    return int(seq) if seq is not None else 0


def process_sockets_to_port(pid: int, port: int) -> int:
    """TCP sockets of the process connected to a remote `port` (e.g. its Redis connections)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if path.exists():
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    owned = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] in inodes:
                owned += 1
    return owned


def steady_tasks(service: Service, reads: int = 5) -> float:
    """The gateway's asyncio task gauge, the least of a few reads 0.1 s apart: a task that lives
    for an instant (a Redis PING under `wait_for`) is not a leak."""
    counts = []
    for _ in range(reads):
        counts.append(metric_value(scrape_metrics(service), "bandwagon_gateway_asyncio_tasks"))
        time.sleep(0.1)
    return min(counts)
