"""What the pipeline and fan-out benches share about the services they start as processes: the
environment each one gets, and whether it is ready."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path


def service_env(redis_url: str, config: Path, **extra: str) -> dict[str, str]:
    """This process's environment with the bench's Redis and bots file, warnings-only logs and
    UTC, then `extra` (the bots' keys, ports, a worker id). Bytecode is cached, as in an
    installed deployment (the image's venv is compiled at install): a shell that sets
    PYTHONDONTWRITEBYTECODE would otherwise make every service compile its imports at each
    start, seconds of a start-up figure."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(REDIS_URL=redis_url, BANDWAGON_CONFIG=str(config), LOG_LEVEL="WARNING", TZ="UTC")
    env.update(extra)
    return env


def is_ready(port: int) -> bool:
    """`/readyz` on `port` (a worker's health port, a gateway's own) answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
