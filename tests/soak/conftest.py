"""The soak runs only when asked for by path (`pytest tests/soak`, `make soak`): a bare `pytest`
collects `tests/` whole, and must not start a 30-minute run."""

from __future__ import annotations

from pathlib import Path

import pytest

SOAK_DIR = Path(__file__).parent.resolve()


def _asked_for(config: pytest.Config) -> bool:
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == SOAK_DIR or SOAK_DIR in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    skip = pytest.mark.skip(reason="the soak runs only when asked for: pytest tests/soak")
    for item in items:
        if SOAK_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)
