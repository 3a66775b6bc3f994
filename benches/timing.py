"""Measuring: medians of repeated runs in this process, wall time of fresh processes, and a
description of the machine the figures come from."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timed(Generic[T]):
    """The median of `seconds`, and what the last run returned."""

    seconds: tuple[float, ...]
    result: T

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def median_of(run: Callable[[], T], repeats: int) -> Timed[T]:
    """`repeats` runs of `run`, each after a garbage collection and with the collector off, as
    `timeit` does, so one run does not pay for the garbage of another."""
    seconds: list[float] = []
    result: T | None = None
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            result = run()
            seconds.append(time.perf_counter() - start)
        finally:
            gc.enable()
    if result is None:
        raise ValueError("repeats must be at least 1")
    return Timed(tuple(seconds), result)


@dataclass(frozen=True, slots=True)
class ProcessRun:
    seconds: float  # from just before the process is started to its exit
    stdout: str


def run_process(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float,
) -> ProcessRun:
    """One fresh process, timed from start to exit; a failure raises with its stderr."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(arg) for arg in argv],
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return ProcessRun(seconds, done.stdout)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_line(packages: Sequence[str]) -> str:
    """`CPU, N cores, OS, Python X, package versions`: enough to tell two machines apart."""
    versions = ", ".join(f"{name} {package_version(name)}" for name in packages)
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}, {versions}"
    )
