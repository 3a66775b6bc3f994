"""The Makefile and .ci/run, read by make itself (`make -n` prints recipes without running them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def make(*args: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_make_help_lists_every_target_and_is_the_default() -> None:
    shown = make()
    assert shown == make("help")
    listed = [line.split()[0] for line in shown.splitlines()[1:]]
    assert listed == (
        [
            "help",
            "install",
            "run",
            "watch",
            "test",
            "lint",
            "k8s-check",
            "fmt",
            "bench",
            "soak",
            "clean",
        ]
    )


def test_make_run_passes_args_to_bandwagon_run() -> None:
    commands = make("-n", "run", "ARGS=--replay tests/data/klines-1m-3000.csv --speed max")
    assert commands.splitlines()[-1] == (
        ".venv/bin/bandwagon run --replay tests/data/klines-1m-3000.csv --speed max"
    )


def test_make_test_lints_then_checks_deploy_and_k8s_then_runs_every_test_level() -> None:
    commands = [
        " ".join(line.split())
        for line in make("-n", "test").splitlines()
        if not line.startswith((".venv/bin/python -m pip", "touch"))
    ]
    assert commands[:3] == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
    ]
    assert commands[-1] == (
        ".venv/bin/pytest -q --durations=10 tests/unit tests/integration tests/e2e"
    )
    checks = "\n".join(commands[3:-1])
    for step in (
        ".venv/bin/kubectl kustomize k8s/overlays/dev",
        ".venv/bin/kubectl kustomize k8s/overlays/prod",
        ".venv/bin/kubernetes-validate --strict",
        ".venv/bin/hadolint deploy/Dockerfile",
        ".venv/bin/docker-compose -f deploy/docker-compose.yml config --quiet",
        ".venv-checkov/bin/checkov --skip-download",
    ):
        assert step in checks, step


def test_the_venv_is_reinstalled_only_when_pyproject_changes() -> None:
    stamp = REPO / ".venv" / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < (REPO / "pyproject.toml").stat().st_mtime:
        pytest.skip("the venv is not installed through make here")
    assert "pip install" not in make("-n", "install")


def test_ci_run_is_an_executable_bash_script_that_runs_make_test() -> None:
    script = REPO / ".ci" / "run"
    assert os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert lines[-1] == "make test"
