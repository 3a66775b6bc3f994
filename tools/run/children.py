"""What a supervised process is, apart from who supervises it.

`demo` names the four services as `ChildSpec`s and `supervisor` runs them; both import this
module, and `demo` needs nothing of `supervisor`, so the two do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One supervised process: `argv` runs with exactly `env`, in `cwd` (default: ours)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path | None = None
