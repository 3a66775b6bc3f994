"""The fan-out and pipeline benches' pure helpers: percentiles, Prometheus histogram quantiles,
and the load generator's frame helpers."""

from __future__ import annotations

import math

import pytest

from benches.loadgen import OP_TEXT, client_frame, seq_of
from benches.loadgen_stats import (
    histogram_quantile,
    parse_histogram,
    percentile,
    subtract_histograms,
)


def test_percentile_interpolates_between_closest_ranks_as_numpy() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.99) == pytest.approx(4.96)
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_histogram_quantile_is_linear_within_the_bucket() -> None:
    buckets = [(0.01, 10.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.01 + 0.09 * 40 / 80)
    assert histogram_quantile(buckets, 0.05) == pytest.approx(0.005)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert histogram_quantile([(1.0, 0.0), (math.inf, 5.0)], 0.5) == 1.0  # only in +Inf
    assert math.isnan(histogram_quantile([(1.0, 0.0), (math.inf, 0.0)], 0.5))


def test_histogram_parsed_from_the_exposition_and_subtracted() -> None:
    text = (
        "# HELP h x\n"
        'h_bucket{le="0.1"} 3.0\n'
        'h_bucket{le="+Inf"} 5.0\n'
        "h_count 5.0\n"
        'other_bucket{le="0.1"} 9.0\n'
    )
    after = parse_histogram(text, "h")
    assert after == [(0.1, 3.0), (math.inf, 5.0)]
    assert subtract_histograms(after, [(0.1, 1.0), (math.inf, 1.0)]) == [
        (0.1, 2.0),
        (math.inf, 4.0),
    ]


def test_client_frames_are_masked_and_seq_is_read_from_the_prefix() -> None:
    payload = b'{"action":"init","apiKey":"k"}'
    frame = client_frame(OP_TEXT, payload)
    assert frame[0] == 0x81 and frame[1] == 0x80 | len(payload)
    mask = frame[2:6]
    unmasked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(frame[6:]))
    assert unmasked == payload
    long = client_frame(OP_TEXT, b"x" * 300)
    assert long[1] == 0x80 | 126 and int.from_bytes(long[2:4], "big") == 300
    assert seq_of(b'{"action":"refresh","seq":42,"epoch":"e"}') == 42
    assert seq_of(b'{"action":"init","seq":42}') == -1
