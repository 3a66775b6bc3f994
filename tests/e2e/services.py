"""Starting Bandwagon's services as real processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from libs.redis_server import free_port

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
                [sys.executable, "-m", "services.cli", name, *args],
                env=self.env(**{"WORKER_ID": label, **port_env, **env}),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = Service(label, process, health_url, log_path)
        self.services[label] = service
        return service

    def wait_ready(self, *names: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names:
            service = self.services[name]
            while not service.ready():
                if service.process.poll() is not None:
                    raise AssertionError(
                        f"{name} exited {service.process.returncode}:\n{service.log()}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} not ready in {timeout_s} s:\n{service.log()}")
                time.sleep(0.1)

    def stop_all(self) -> dict[str, int]:
        return {name: service.stop() for name, service in reversed(self.services.items())}


def backtest_json(config: Path, bot: str, files: list[str], out: Path) -> dict[str, Any]:
    """`bandwagon backtest --json` on the same bots file and data (`--klines=PID=FILE`...), with
    TZ=UTC like the deployment: the uninterrupted reference the live pipeline must equal."""
    command = [sys.executable, "-m", "services.cli", "backtest", "--config", str(config)]
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
