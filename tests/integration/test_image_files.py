"""The image's build and check files, offline and in seconds (docs/image.md): deploy/image-base.sh
finds the FROM tag and makes nothing when it is there, the Makefile's image targets, the
Dockerfile's hardening, and tools.image_check's container flags and its cleanup after a failure,
with a stand-in engine. `make image-check` itself builds and runs the image (minutes, podman)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tools import image_check

REPO = Path(__file__).parents[2]
BASE_SCRIPT = REPO / "deploy" / "image-base.sh"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
# An engine that answers what the check asks first and fails to run any container: each call is
# written to a file of its own in $ENGINE_LOG (the containers start side by side). USER and size
# come from $ENGINE_USER and a fixed number.
STAND_IN_ENGINE = """#!/usr/bin/env bash
echo "$*" > "$(mktemp "$ENGINE_LOG/call.XXXXXX")"
case "$*" in
  "image inspect --format {{.Config.User}} "*) echo "$ENGINE_USER" ;;
  "image inspect --format {{.Size}} "*) echo 642185430 ;;
  run\\ *) echo "Error: no runtime here" >&2; exit 125 ;;
  "container inspect "*) exit 125 ;;
esac
"""


def base_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BASE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_the_base_script_reads_the_from_tag_and_makes_nothing_when_it_is_there() -> None:
    result = base_script({"PODMAN": "true"})  # `true image exists TAG`: the tag is there
    assert result.returncode == 0, result.stderr
    assert result.stdout == "base image python:3.11-slim-bookworm: present\n"


def test_the_base_script_refuses_two_bases_and_a_tag_no_debian_suite_makes(tmp_path: Path) -> None:
    two = tmp_path / "Dockerfile.two"
    two.write_text("FROM python:3.11-slim-bookworm AS build\nFROM python:3.12-slim\n")
    result = base_script({"PODMAN": "true", "DOCKERFILE": str(two)})
    assert result.returncode == 1
    assert "expected one FROM image" in result.stderr
    other = tmp_path / "Dockerfile.other"
    other.write_text("FROM python:3.12-slim-bookworm\n")
    result = base_script({"PODMAN": "false", "DOCKERFILE": str(other)})  # missing, not pulled
    assert result.returncode == 1
    assert "no Debian suite is known to hold its Python" in result.stderr


def test_the_base_script_parses() -> None:
    assert BASE_SCRIPT.stat().st_mode & 0o111, "deploy/image-base.sh is not executable"
    subprocess.run(["bash", "-n", str(BASE_SCRIPT)], check=True, timeout=10)


def test_the_dockerfile_builds_on_a_base_without_pip_and_runs_non_root() -> None:
    text = DOCKERFILE.read_text()
    bases = set(re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE))
    assert bases == {"python:3.11-slim-bookworm"}
    assert "if python -m pip --version >/dev/null 2>&1; then" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users == ["10001:10001"]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_image_check_builds_then_runs_the_check_module() -> None:
    recipe = subprocess.run(
        ["make", "--no-print-directory", "-n", "image-check", "PODMAN=podman --stand-in"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "deploy/image-base.sh" in recipe
    assert 'build "${mounts[@]}"  -f deploy/Dockerfile -t bandwagon:0.1.0 .' in recipe
    assert "--format docker --pull=never --layers=false" in recipe
    last = recipe.strip().splitlines()[-1]
    assert last.startswith(".venv/bin/python -m tools.image_check --engine ")
    assert last.endswith(" --image bandwagon:0.1.0")


def test_the_containers_are_hardened_as_the_manifests_promise() -> None:
    flags = " ".join(image_check.RUN_FLAGS)
    for flag in ("--read-only", "--tmpfs /tmp:", "--cap-drop ALL", "no-new-privileges"):
        assert flag in flags
    assert "--user" not in flags and "--privileged" not in flags  # the image's own user


def run_check(tmp_path: Path, user: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    engine = tmp_path / "engine"
    engine.write_text(STAND_IN_ENGINE)
    engine.chmod(0o755)
    log = tmp_path / "calls"
    log.mkdir()
    monkeypatch.setenv("ENGINE_LOG", str(log))
    monkeypatch.setenv("ENGINE_USER", user)
    code = image_check.main(["--engine", str(engine), "--image", "bandwagon:test"])
    return code, "".join(call.read_text() for call in log.iterdir())


def test_a_container_that_fails_to_start_is_removed_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, calls = run_check(tmp_path, "10001:10001", monkeypatch)
    assert code == 1
    runs = {
        line.split("--name ")[1].split()[0]: line
        for line in calls.splitlines()
        if line.startswith("run ")
    }
    assert sorted(name.rsplit("-", 1)[1] for name in runs) == sorted(image_check.SERVICES)
    removed = next(line for line in calls.splitlines() if line.startswith("rm --force --volumes"))
    for name, run in runs.items():
        service = re.fullmatch(r"bandwagon-image-check-[0-9a-f]{8}-(\w+)", name)
        assert service is not None, name
        assert name in removed.split()
        assert "--user" not in run and " --read-only " in run
        assert run.endswith(f" bandwagon:test {service[1]}")
        # Only accounting gets the key, by name: its value comes from the environment.
        assert ("--env BOT_API_KEY " in run) == (service[1] == "accounting")
        assert "BOT_API_KEY=" not in run


def test_an_image_that_runs_as_root_is_refused_before_any_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, calls = run_check(tmp_path, "", monkeypatch)
    assert code == 1
    assert "run " not in calls
