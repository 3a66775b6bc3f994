"""vectorbt's first run in a fresh process: `python -m benches.vectorbt_first_run PRICES.npz`.

Prints one JSON line: seconds to import vectorbt, seconds of the first run (bands, signals and
portfolio, numba's compilation or cache loading included), and the fills it made as
`[index, opens, side]`. Which of the
two the first run pays is up to `NUMBA_CACHE_DIR`: empty, numba compiles everything; filled by
an earlier process, it loads the compiled code. The caller times the whole process.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from benches.strategies import Rules, run_vectorbt, vectorbt_marks


def main(argv: list[str]) -> int:
    with np.load(argv[0]) as saved:
        time_ms, price = saved["time_ms"], saved["price"]
        rules = Rules(**json.loads(str(saved["rules"])))
    start = time.perf_counter()
    import vectorbt  # noqa: F401

    imported = time.perf_counter()
    portfolio = run_vectorbt(time_ms, price, rules)
    done = time.perf_counter()
    figures = {
        "import_s": imported - start,
        "first_run_s": done - imported,
        "fills": [[mark.index, mark.opens, mark.side] for mark in vectorbt_marks(portfolio)],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
