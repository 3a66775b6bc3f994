"""The layout's promises that a process can show: what a gateway loads (issue 15)."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.services import REPO


def test_a_gateway_process_loads_nothing_of_the_trading_core_numpy_or_ta_lib() -> None:
    """The gateway faces the internet and never trades: importing it must not bring the strategy
    machine, numpy or TA-Lib in (import-linter checks the imports; this checks a real process)."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, services.gateway.main; print('\\n'.join(sorted(sys.modules)))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert "services.gateway.main" in loaded
    heavy = [m for m in loaded if m.split(".")[0] in ("numpy", "talib", "ccxt")]
    core = [m for m in loaded if m == "libs.core" or m.startswith("libs.core.")]
    assert heavy == [] and core == [], (heavy, core)
