"""Pure helpers of the pipeline and fan-out benches: percentiles, Prometheus histogram quantiles,
and what /proc says of a process (CPU seconds, RSS). No sockets, no Redis."""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) by linear interpolation between closest ranks, as numpy's
    default; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def histogram_quantile(buckets: Sequence[tuple[float, float]], fraction: float) -> float:
    """Prometheus `histogram_quantile`: `buckets` are (upper bound, cumulative count) ascending,
    the last one +Inf. Linear within the bucket that holds the quantile; nan when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = fraction * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound


def parse_histogram(text: str, name: str) -> list[tuple[float, float]]:
    """The (le, cumulative count) samples of histogram `name` (no other labels) in a Prometheus
    text exposition, ascending."""
    found: list[tuple[float, float]] = []
    prefix = f'{name}_bucket{{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            bound_text, _, rest = line[len(prefix) :].partition('"')
            found.append((float(bound_text), float(rest.rsplit(" ", 1)[1])))
    return sorted(found)


def subtract_histograms(
    after: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The observations between two scrapes of the same histogram."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (utime + stime of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_open_files() -> None:
    """Lift this process's soft RLIMIT_NOFILE to its hard limit (10,000 sockets need it); as a
    `preexec_fn`, the child inherits it through exec."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True, slots=True)
class Spread:
    p50: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Spread:
    return Spread(percentile(values, 0.5), percentile(values, 0.99), max(values, default=math.nan))


def ratio(value: float, reference: float) -> float:
    if reference == 0 or math.isnan(reference) or math.isnan(value):
        return math.nan
    return value / reference
