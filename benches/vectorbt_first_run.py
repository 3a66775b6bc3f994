"""vectorbt's first run in a fresh process: `python -m benches.vectorbt_first_run PRICES.npz`.

Prints one JSON line: seconds to import vectorbt, seconds of the first run (numba's compilation
or cache loading included), and what it did. Which of the two the first run pays is up to
`NUMBA_CACHE_DIR`: empty, numba compiles everything; filled by an earlier process, it loads the
compiled code. The caller times the whole process.

The file says what to run. Without `kind`, or with `kind` "single": one Bollinger backtest
(bands, signals and portfolio) of `rules`, and its fills as `[index, opens, side]`. With `kind`
"sweep": vectorbt's sweep of the grid `periods` x `nbdevs` with the terms `terms`
(`benches.strategies.run_vectorbt_sweep`), and the fill count of each combination.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from benches.strategies import Rules, Terms, run_vectorbt, run_vectorbt_sweep, vectorbt_marks


def main(argv: list[str]) -> int:
    with np.load(argv[0]) as saved:
        time_ms, price = saved["time_ms"], saved["price"]
        kind = str(saved["kind"]) if "kind" in saved.files else "single"
        if kind == "sweep":
            terms = Terms(**json.loads(str(saved["terms"])))
            periods = [int(period) for period in saved["periods"]]
            nbdevs = [float(nbdev) for nbdev in saved["nbdevs"]]
        else:
            rules = Rules(**json.loads(str(saved["rules"])))
    start = time.perf_counter()
    import vectorbt  # noqa: F401

    imported = time.perf_counter()
    figures: dict[str, Any]
    if kind == "sweep":
        sweep = run_vectorbt_sweep(time_ms, price, terms, periods, nbdevs)
        done = time.perf_counter()
        figures = {"fill_counts": sweep.fill_counts()}
    else:
        portfolio = run_vectorbt(time_ms, price, rules)
        done = time.perf_counter()
        fills = vectorbt_marks(portfolio)
        figures = {"fills": [[mark.index, mark.opens, mark.side] for mark in fills]}
    figures |= {"import_s": imported - start, "first_run_s": done - imported}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
