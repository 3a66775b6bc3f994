"""Files of secrets the demo and the tests keep on disk: passwords, keys, users files."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: str | bytes) -> None:
    """Write `data` to `path`, readable by this user only (0600) from its first byte: never a
    moment with the umask's mode, and an existing file of looser mode is tightened."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
