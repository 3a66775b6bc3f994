"""Each benchmark owns one section of docs/benchmarks.md, between its own begin and end markers,
and rewrites only that: the prose around the figures stays as people wrote it."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, block: str, begin_mark: str, end_mark: str) -> None:
    """Replace what lies between the markers (`block` includes them) with `block`."""
    text = path.read_text(encoding="utf-8")
    begin, end = text.find(begin_mark), text.find(end_mark)
    if begin < 0 or end < begin:
        raise SystemExit(f"{path}: no '{begin_mark}' ... '{end_mark}' to write between")
    path.write_text(text[:begin] + block + text[end + len(end_mark) :], encoding="utf-8")
