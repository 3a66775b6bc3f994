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
            "test-py",
            "lint",
            "lock",
            "k8s-check",
            "acl",
            "fmt",
            "bench",
            "soak",
            "clean",
            "image",
            "image-check",
        ]
    )


def test_make_run_passes_args_to_bandwagon_run() -> None:
    commands = make("-n", "run", "ARGS=--replay tests/data/klines-1m-3000.csv --speed max")
    assert commands.splitlines()[-1] == (
        ".venv/bin/bandwagon run --replay tests/data/klines-1m-3000.csv --speed max"
    )


def test_make_test_checks_the_lock_lints_checks_deploy_then_runs_every_test_level() -> None:
    commands = [
        " ".join(line.split())
        for line in make("-n", "-W", "uv.lock", "test").splitlines()
        if not line.startswith(("touch", "rm -rf .venv-uv"))
    ]
    lint_at = commands.index(".venv/bin/ruff check .")
    assert commands[lint_at : lint_at + 4] == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
        ".venv/bin/lint-imports --no-cache",
    ]
    assert "uv lock --check" in "\n".join(commands[:lint_at])
    assert commands[-1] == (
        ".venv/bin/pytest -q --durations=10 tests/unit tests/integration tests/e2e examples"
    )
    checks = "\n".join(commands[lint_at + 4 : -1])
    for step in (
        ".venv/bin/kubectl kustomize k8s/overlays/dev",
        ".venv/bin/kubectl kustomize k8s/overlays/prod",
        ".venv/bin/kubernetes-validate --strict",
        ".venv/bin/hadolint deploy/Dockerfile",
        ".venv/bin/docker-compose -f deploy/docker-compose.yml config --quiet",
        ".venv-checkov/bin/checkov --skip-download",
    ):
        assert step in checks, step


def test_every_install_comes_from_a_lock_with_hashes_never_from_a_fresh_resolve() -> None:
    """Issue 14: a release made after the last landing must not change a fresh clone's install.
    Forcing every lock to look changed (-W) shows each install command make would run."""
    recipes = make(
        "-n", "-W", "uv.lock", "-W", "locks/checkov.txt", "-W", "locks/uv.txt",
        "install", "k8s-check", "bench", "test-py",
    )  # fmt: skip
    installs = [
        " ".join(line.split())
        for line in recipes.splitlines()
        if " install " in line or " sync " in line
    ]
    assert len(installs) >= 4, recipes
    for command in installs:
        frozen = " sync --frozen " in command
        hashed = " install " in command and "--require-hashes -r locks/" in command
        assert frozen or hashed, command


def test_the_lock_files_pin_every_package_with_a_hash() -> None:
    for name in ("uv.txt", "checkov.txt", "runtime.txt", "build.txt"):
        requirements = (REPO / "locks" / name).read_text()
        pins = [line for line in requirements.splitlines() if "==" in line and line[0] != "#"]
        assert pins, name
        for pin in pins:
            assert pin.endswith("\\"), (name, pin)  # each pin is followed by its --hash lines
        assert requirements.count("--hash=sha256:") >= len(pins), name
    assert "[[package]]" in (REPO / "uv.lock").read_text()
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r locks/runtime.txt" in dockerfile
    assert "--no-deps --no-build-isolation ." in dockerfile


def test_a_lock_that_disagrees_with_pyproject_fails_the_check(tmp_path: Path) -> None:
    """`make lint` (and so `make test`) stops when pyproject.toml asks for what uv.lock lacks."""
    uv = REPO / ".venv-uv" / "bin" / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed through make here")
    pyproject = (REPO / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(
        pyproject.replace('"orjson>=3.10,<4",', '"orjson>=3.10,<4",\n  "six>=1.16",')
    )
    shutil.copy(REPO / "uv.lock", tmp_path / "uv.lock")
    environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    stale = subprocess.run(
        [str(uv), "lock", "--check", "--offline"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert stale.returncode != 0
    # With the metadata of `six` cached uv says the lock needs an update; with an empty cache,
    # offline, it cannot resolve at all. Either way the lock is refused, as the in-sync one is not.
    assert "needs to be updated" in stale.stderr or "No solution found" in stale.stderr
    current = subprocess.run(
        [str(uv), "lock", "--check", "--offline"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert current.returncode == 0, current.stderr


def test_the_venv_is_synced_again_only_when_pyproject_or_the_lock_changes() -> None:
    stamp = REPO / ".venv" / ".installed"
    newest_input = max((REPO / name).stat().st_mtime for name in ("pyproject.toml", "uv.lock"))
    if not stamp.exists() or stamp.stat().st_mtime < newest_input:
        pytest.skip("the venv is not installed through make here")
    assert " sync " not in make("-n", "install")
    assert " sync --frozen " in make("-n", "-W", "uv.lock", "install")


def test_ci_run_is_an_executable_bash_script_that_runs_make_test() -> None:
    script = REPO / ".ci" / "run"
    assert os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert "make test" in lines
    assert lines.index("make test") < lines.index("make test-py PY=3.13")
    assert lines[-1] == "make image-check"  # issue 17: after the tests, the image built and run
