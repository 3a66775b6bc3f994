"""`python -m tools.image_check`: run Bandwagon from its image, hardened as the manifests run it,
and probe it from outside (`make image-check`, after `make image`; docs/image.md).

Redis runs on the host (`tools.run.redis_server`); ingest (synthetic data), strategy, accounting,
notify and the gateway each run in a container of the image on the host network, on free ports,
as the image's own non-root user, with a read-only root file system (a tmpfs on /tmp), no
capabilities and no new privileges, like deploy/docker-compose.yml and k8s/. The check then asks
for every service's `/readyz` until it answers 200, confirms inside each container that it runs
as non-root and cannot write its root file system, and finally sends a websocket `init` with the
demo bot's key through the containerized gateway and waits for the `refresh` after it (seq + 1,
same epoch). Every container it made is removed at the end, whatever happened; a failure shows
the containers' last log lines first.

The engine is podman (with `make image`'s flags) or docker: both take the same arguments here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tools.run.redis_server import RedisServer, free_port, new_passwords, user_env

DEFAULT_ENGINE = "podman --storage-driver vfs --runtime runc"
DEFAULT_IMAGE = "bandwagon:0.1.0"
SERVICES = ("ingest", "strategy", "accounting", "notify", "gateway")
# podman on a machine without systemd: no healthcheck timers; limits a bare runc would leave
# unset. Docker takes the same flags.
RUN_FLAGS = (
    "--network", "host",
    "--read-only",
    "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
    "--ulimit", "nofile=16384:16384",
    "--ulimit", "nproc=4096:4096",
    "--no-healthcheck",
)  # fmt: skip
# Run inside each container: its uid, and whether the root file system takes a write.
PROBE = (
    "import os\n"
    "try:\n"
    "    open('/opt/bandwagon/.image-check', 'w').close()\n"
    "    written = 'writable'\n"
    "except OSError:\n"
    "    written = 'read-only'\n"
    "print(os.getuid(), written)\n"
)


class CheckFailed(Exception):
    pass


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that `finally` removes the containers


@dataclass
class Engine:
    """The container engine's command line (`podman --storage-driver vfs ...` or `docker`)."""

    command: Sequence[str]

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        command = [*self.command, *args]
        try:
            return subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
            )
        except subprocess.TimeoutExpired:  # as a failed command: the cleanup goes on
            return subprocess.CompletedProcess(command, 124, "", f"timed out after {timeout_s} s")

    def output(self, *args: str) -> str:
        result = self.run(*args)
        if result.returncode != 0:
            command = shlex.join([*self.command, *args])
            raise CheckFailed(f"{command} exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout.strip()


@dataclass
class Stack:
    """Redis on the host and the five services in containers, started and removed together."""

    engine: Engine
    image: str
    data_dir: Path
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    ports: dict[str, int] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)  # service -> container name
    redis: RedisServer | None = None

    def start(self) -> None:
        # each service as its own Redis user (SPEC 4.1 rule 14), as the manifests run them
        self.redis = RedisServer(
            self.data_dir / "redis", passwords=new_passwords(), default_user=False
        ).start()
        for service in SERVICES:
            self.ports[service] = free_port()
        # Side by side: with podman's vfs driver each container begins as a copy of the image.
        with ThreadPoolExecutor(len(SERVICES)) as pool:
            list(pool.map(self._start, SERVICES))

    def _start(self, service: str) -> None:
        assert self.redis is not None
        name = f"bandwagon-image-check-{self.run_id}-{service}"
        self.containers[service] = name  # before `run`: a half-made container is removed too
        port = str(self.ports[service])
        environment = {
            "REDIS_URL": self.redis.url,
            "WORKER_ID": f"image-check-{service}",
            "LEASE_TTL_S": "10",
            "HEALTH_HOST": "127.0.0.1",
            "GATEWAY_HOST": "127.0.0.1",
            **({"GATEWAY_PORT": port} if service == "gateway" else {"HEALTH_PORT": port}),
            **({"BANDWAGON_SOURCE": "synthetic"} if service == "ingest" else {}),
        }
        arguments = ["run", "--detach", "--name", name, *RUN_FLAGS]
        for variable, value in environment.items():
            arguments += ["--env", f"{variable}={value}"]
        env = dict(os.environ)
        if service == "accounting":  # the one service that reads keys; never on a command line
            env["BOT_API_KEY"] = self.api_key
            arguments += ["--env", "BOT_API_KEY"]
        assert self.redis.passwords is not None
        env.update(user_env(self.redis.passwords, service))  # passed by name, like the key
        arguments += ["--env", "REDIS_USERNAME", "--env", "REDIS_PASSWORD"]
        result = self.engine.run(*arguments, self.image, service, env=env)
        if result.returncode != 0:
            raise CheckFailed(f"{service}: the container did not start: {result.stderr.strip()}")

    def health_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def running(self, service: str) -> bool:
        state = self.engine.run(
            "inspect", "--format", "{{.State.Running}}", self.containers[service]
        )
        return state.stdout.strip() == "true"

    def logs(self, service: str, lines: int = 30) -> str:
        result = self.engine.run("logs", "--tail", str(lines), self.containers[service])
        return (result.stdout + result.stderr).rstrip()

    def _exists(self, name: str) -> bool:
        return self.engine.run("container", "inspect", name).returncode == 0

    def remove(self) -> list[str]:
        """Remove every container made (stopped gracefully first), then stop Redis. Returns what
        could not be removed."""
        names = list(self.containers.values())
        left: list[str] = []
        if names:
            # SIGTERM first: each service drains and commits (SPEC 4.1 rule 4), as in production.
            self.engine.run("stop", "--time", "10", *names, timeout_s=60)
            self.engine.run("rm", "--force", "--volumes", *names, timeout_s=120)
            left = [name for name in names if self._exists(name)]
            for name in left:  # an engine that gave up on the whole list for one name
                self.engine.run("rm", "--force", "--volumes", name, timeout_s=60)
            left = [name for name in left if self._exists(name)]
        if self.redis is not None:
            self.redis.stop()
        return left


def image_user(engine: Engine, image: str) -> str:
    """The image's USER; the containers run as it (no --user)."""
    user = engine.output("image", "inspect", "--format", "{{.Config.User}}", image)
    if user.split(":")[0] in ("", "0", "root"):
        raise CheckFailed(f"{image} runs as root (USER {user!r}); the manifests promise non-root")
    return user


def image_size_mb(engine: Engine, image: str) -> float:
    return int(engine.output("image", "inspect", "--format", "{{.Size}}", image)) / 1e6


def wait_ready(stack: Stack, timeout_s: float) -> dict[str, float]:
    """Seconds until each service's /readyz answered 200; a container that exits fails at once."""
    started = time.monotonic()
    deadline = started + timeout_s
    ready: dict[str, float] = {}
    with httpx.Client(timeout=2.0) as client:
        while len(ready) < len(SERVICES):
            for service in SERVICES:
                if service in ready:
                    continue
                try:
                    response = client.get(f"{stack.health_url(service)}/readyz")
                    if response.status_code == 200:
                        ready[service] = time.monotonic() - started
                        continue
                except httpx.HTTPError:
                    pass
                if not stack.running(service):
                    raise CheckFailed(f"{service}: the container exited before /readyz said 200")
            if time.monotonic() > deadline:
                waiting = ", ".join(service for service in SERVICES if service not in ready)
                raise CheckFailed(f"not ready within {timeout_s:g} s: {waiting}")
            time.sleep(0.5)
    return ready


def check_hardening(stack: Stack) -> None:
    """Inside each container: a non-root uid, and a root file system that refuses a write."""
    for service, name in stack.containers.items():
        read_only = stack.engine.output(
            "container", "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name
        )
        uid, written = stack.engine.output("exec", name, "python", "-c", PROBE).split()
        if uid == "0" or read_only != "true" or written != "read-only":
            raise CheckFailed(
                f"{service}: uid {uid}, read-only root {read_only}, a write to /opt: {written}"
            )


async def init_and_refresh(url: str, api_key: str, timeout_s: float) -> tuple[dict[str, Any], int]:
    """An `init` through the gateway, then the `refresh` after it: (the init reply, its
    refresh's seq). The gateway closes with 1013 until accounting has made the bot's state, so a
    close before the init reply is retried until the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer"
    while loop.time() < deadline:
        try:
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                async with connect(url, max_size=64 * 1024 * 1024) as ws:
                    await ws.send(json.dumps({"action": "init", "apiKey": api_key}))
                    reply = json.loads(await ws.recv())
                    if reply.get("action") != "init":
                        last = f"answer to init: {str(reply)[:200]}"
                        await asyncio.sleep(1.0)
                        continue
                    while True:
                        message = json.loads(await ws.recv())
                        if message.get("action") != "refresh" or message["seq"] <= reply["seq"]:
                            continue
                        if message["epoch"] != reply["epoch"] or message["seq"] != reply["seq"] + 1:
                            raise CheckFailed(
                                f"refresh seq {message['seq']} epoch {message['epoch']} after "
                                f"init seq {reply['seq']} epoch {reply['epoch']}"
                            )
                        return reply, int(message["seq"])
        except TimeoutError:  # the deadline (before OSError, of which it is a kind)
            break
        except (ConnectionClosed, InvalidHandshake, OSError) as error:
            last = f"{type(error).__name__}: {error}"
            await asyncio.sleep(1.0)
    raise CheckFailed(f"no init and refresh through {url} within {timeout_s:g} s ({last})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.image_check",
        description="Run Redis and the five services from the image; check /readyz, non-root, "
        "read-only, and a websocket init and refresh through the gateway. Removes what it made.",
    )
    parser.add_argument("--engine", default=DEFAULT_ENGINE, help=f"default: {DEFAULT_ENGINE}")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"default: {DEFAULT_IMAGE}")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for each stage")
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return check(Engine(shlex.split(args.engine)), args.image, args.timeout)
    finally:
        signal.signal(signal.SIGTERM, previous)


def check(engine: Engine, image: str, timeout_s: float) -> int:
    """The whole check; 0 when it passed. Whatever happens, what it made is removed."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bandwagon-image-check-") as data_dir:
        stack = Stack(engine, image, Path(data_dir))
        failed = True
        try:
            user = image_user(engine, image)
            print(f"image {image}: {image_size_mb(engine, image):.0f} MB, user {user}")
            stack.start()
            print(
                f"redis on the host ({stack.redis.url if stack.redis else '?'}); "
                f"{len(stack.containers)} containers started in "
                f"{time.monotonic() - started:.0f} s: {', '.join(stack.containers.values())}"
            )
            ready = wait_ready(stack, timeout_s)
            print("ready: " + ", ".join(f"{s} {ready[s]:.1f} s" for s in SERVICES))
            check_hardening(stack)
            print(f"non-root (uid {user.split(':')[0]}), root file system read-only: all five")
            url = f"ws://127.0.0.1:{stack.ports['gateway']}/ws"
            reply, refresh_seq = asyncio.run(init_and_refresh(url, stack.api_key, timeout_s))
            print(
                f"gateway {url}: init seq {reply['seq']} epoch {reply['epoch']}, "
                f"{len(reply.get('symbols', []))} symbols; then refresh seq {refresh_seq}"
            )
            failed = False
        except (CheckFailed, RuntimeError) as error:
            print(f"image check failed: {error}", file=sys.stderr)
        finally:
            if failed:
                for service in stack.containers:
                    print(f"--- {service} (last lines)\n{stack.logs(service)}", file=sys.stderr)
            removing = time.monotonic()
            left = stack.remove()
            print(f"removed in {time.monotonic() - removing:.0f} s")
            if left:
                print(f"could not remove: {', '.join(left)}", file=sys.stderr)
                failed = True
    if failed:
        return 1
    print(f"image check passed in {time.monotonic() - started:.0f} s; its containers are removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
