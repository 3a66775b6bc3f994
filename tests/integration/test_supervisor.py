"""`Supervisor` with real child processes: tiny Python scripts, no mocks.

Each script appends its pid to a file, so a test counts starts and checks afterwards, through
/proc, that nothing it started is still alive.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libs.errors import ConfigError
from tests.support.polling import wait_until
from tools.run import demo
from tools.run.children import ChildSpec
from tools.run.supervisor import Backoff, Supervisor

FAST = Backoff(initial_s=0.1, max_s=0.2, healthy_after_s=30.0)
CONFIG_ERROR_LINE = "config error: bots[0].id: Bad Id: String should match pattern"

CRASHER = """
    import sys, time
    open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
    print("crasher: about to fail", flush=True)
    time.sleep(0.2)
    sys.exit(1)
"""
CONFIG_ERROR = f"""
    import sys, time
    open(sys.argv[1], "a").write(f"{{os.getpid()}}\\n")
    time.sleep(0.1)
    print({CONFIG_ERROR_LINE!r}, file=sys.stderr)
    sys.exit(78)
"""
SLEEPER = """
    import sys, time
    open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
    time.sleep(60)
"""
SLEEPER_WITH_STUBBORN_GRANDCHILD = """
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c",
        "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "open(sys.argv[1], 'a').write(f'{os.getpid()}\\\\n'); time.sleep(60)", sys.argv[1]])
    open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
    time.sleep(60)
"""
IGNORES_SIGTERM = """
    import signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
    time.sleep(60)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (an orphan's reaper may be a busy PID 1)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat_line.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


class Run:
    """A supervisor running in a thread, as the demo runs it in its main loop."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.supervisor.run()

    def stop(self, timeout_s: float = 15.0) -> int:
        self.supervisor.request_stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the supervisor did not stop"
        assert self.code is not None
        return self.code


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[[str, str], tuple[ChildSpec, Path]]]:
    """Writes a script; returns its spec and the file its pids go to."""
    made: list[Path] = []

    def make(name: str, body: str) -> tuple[ChildSpec, Path]:
        script = tmp_path / f"{name}.py"
        script.write_text("import os\n" + textwrap.dedent(body))
        pid_file = tmp_path / f"{name}.pids"
        made.append(pid_file)
        return ChildSpec(
            name, [sys.executable, str(script), str(pid_file)], dict(os.environ)
        ), pid_file

    yield make
    # Whatever a test asserted, leave nothing running behind it.
    for pid_file in made:
        for pid in pids_in(pid_file):
            if alive(pid):
                os.kill(pid, 9)


def test_a_child_that_dies_is_restarted_with_doubling_capped_delays(
    tmp_path: Path, child: Callable[[str, str], tuple[ChildSpec, Path]]
) -> None:
    crasher, crasher_pids = child("crasher", CRASHER)
    sleeper, sleeper_pids = child("sleeper", SLEEPER)
    out = io.StringIO()
    run = Run(Supervisor([crasher, sleeper], tmp_path / "logs", backoff=FAST, out=out))
    wait_until(lambda: len(pids_in(crasher_pids)) >= 4, timeout_s=10, what="4 starts of crasher")

    assert run.stop() == 0
    assert run.supervisor.starts("crasher") >= 4
    assert run.supervisor.starts("sleeper") == len(pids_in(sleeper_pids)) == 1
    shown = out.getvalue()
    assert re.search(
        r"crasher +exited with 1 after 0\.\d s, restarting in 0\.1 s: crasher: about to fail", shown
    )
    assert "restarting in 0.2 s" in shown and "restarting in 0.4 s" not in shown
    log = (tmp_path / "logs" / "crasher.log").read_text()
    assert log.count("crasher: about to fail") >= 4
    assert not [pid for pid in run.supervisor.pids() if alive(pid)]


def test_the_backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_run() -> None:
    backoff = Backoff(initial_s=0.5, max_s=10.0, healthy_after_s=30.0)
    delays: list[float] = []
    previous: float | None = None
    for _ in range(7):
        previous = backoff.next_delay_s(previous, ran_s=1.0)
        delays.append(previous)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.next_delay_s(10.0, ran_s=30.0) == 0.5


def test_a_child_exiting_78_is_not_restarted_stops_everything_and_shows_its_line(
    tmp_path: Path, child: Callable[[str, str], tuple[ChildSpec, Path]]
) -> None:
    broken, broken_pids = child("broken", CONFIG_ERROR)
    sleeper, _ = child("sleeper", SLEEPER)
    out = io.StringIO()
    supervisor = Supervisor([broken, sleeper], tmp_path / "logs", backoff=FAST, out=out)

    started = time.monotonic()
    assert supervisor.run() == 78
    assert time.monotonic() - started < 5

    assert len(pids_in(broken_pids)) == 1
    assert supervisor.starts("broken") == 1
    assert supervisor.config_error == CONFIG_ERROR_LINE
    shown = out.getvalue()
    assert "broken      exited 78, a config error; not restarting" in shown
    assert f"  {CONFIG_ERROR_LINE}\n" in shown
    assert not [pid for pid in supervisor.pids() if alive(pid)]


def test_shutdown_leaves_no_process_behind_not_even_a_grandchild(
    tmp_path: Path, child: Callable[[str, str], tuple[ChildSpec, Path]]
) -> None:
    first, first_pids = child("first", SLEEPER_WITH_STUBBORN_GRANDCHILD)
    second, second_pids = child("second", SLEEPER)
    run = Run(Supervisor([first, second], tmp_path / "logs", grace_s=5.0, out=io.StringIO()))
    wait_until(
        lambda: len(pids_in(first_pids)) == 2 and len(pids_in(second_pids)) == 1,
        timeout_s=10,
        what="first and its grandchild, and second, started",
    )
    everything = pids_in(first_pids) + pids_in(second_pids)
    assert all(alive(pid) for pid in everything)

    started = time.monotonic()
    assert run.stop() == 0
    # The leaders exit on SIGTERM at once; the grandchild that ignores it goes with the group's
    # SIGKILL, without waiting out the grace period.
    assert time.monotonic() - started < 3
    # SIGKILL is sent by then; the kernel may take a moment to finish the grandchild off.
    wait_until(
        lambda: not [pid for pid in everything if alive(pid)],
        timeout_s=2,
        what=lambda: f"every process gone; alive: {[pid for pid in everything if alive(pid)]}",
    )


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, child: Callable[[str, str], tuple[ChildSpec, Path]]
) -> None:
    stubborn, stubborn_pids = child("stubborn", IGNORES_SIGTERM)
    out = io.StringIO()
    run = Run(Supervisor([stubborn], tmp_path / "logs", grace_s=0.5, out=out))
    # its SIGTERM handler is in place
    wait_until(lambda: len(pids_in(stubborn_pids)) == 1, timeout_s=10, what="stubborn started")

    started = time.monotonic()
    assert run.stop() == 0
    elapsed_s = time.monotonic() - started
    assert 0.5 <= elapsed_s < 3
    assert "stubborn    still running after 0.5 s: SIGKILL" in out.getvalue()
    assert not alive(pids_in(stubborn_pids)[0])


def test_a_second_stop_request_kills_at_once(
    tmp_path: Path, child: Callable[[str, str], tuple[ChildSpec, Path]]
) -> None:
    stubborn, stubborn_pids = child("stubborn", IGNORES_SIGTERM)
    run = Run(Supervisor([stubborn], tmp_path / "logs", grace_s=30.0, out=io.StringIO()))
    wait_until(lambda: len(pids_in(stubborn_pids)) == 1, timeout_s=10, what="stubborn started")

    started = time.monotonic()
    run.supervisor.request_stop()
    time.sleep(0.2)
    assert run.stop() == 0  # the second request, as a second Ctrl-C
    assert time.monotonic() - started < 3
    assert not alive(pids_in(stubborn_pids)[0])


def test_each_run_starts_an_empty_log_and_keeps_the_previous_one(
    tmp_path: Path, child: Callable[[str, str], tuple[ChildSpec, Path]]
) -> None:
    broken, _ = child("broken", CONFIG_ERROR)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "broken.log").write_text("the previous run\n")

    assert Supervisor([broken], log_dir, out=io.StringIO()).run() == 78
    assert (log_dir / "broken.log.1").read_text() == "the previous run\n"
    assert CONFIG_ERROR_LINE in (log_dir / "broken.log").read_text()
    assert "the previous run" not in (log_dir / "broken.log").read_text()


# -- the demo's key and ports (`bandwagon run` without its services) ----------------------------


def test_the_demo_key_is_generated_once_kept_private_and_reused(tmp_path: Path) -> None:
    first = demo.demo_api_key(tmp_path, {})
    assert first.origin == "generated" and first.path == tmp_path / "demo-api-key"
    assert 16 <= len(first.value) <= 256 and " " not in first.value
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert first.value not in repr(first)

    again = demo.demo_api_key(tmp_path, {})
    assert (again.origin, again.value) == ("kept", first.value)
    from_environment = demo.demo_api_key(tmp_path, {"BOT_API_KEY": "e" * 16})
    assert (from_environment.origin, from_environment.value) == ("environment", "e" * 16)


def test_a_malformed_key_is_a_config_error_that_never_shows_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        demo.demo_api_key(tmp_path, {"BOT_API_KEY": "has a space in it!"})
    assert "has a space" not in str(error.value)
    assert str(error.value).startswith("config error: BOT_API_KEY: ***: ")


def test_a_taken_default_port_moves_but_a_taken_requested_one_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        monkeypatch.setattr(demo, "DEFAULT_GATEWAY_PORT", taken)
        monkeypatch.setattr(demo, "WORKER_HEALTH_PORTS", {"ingest": taken})
        ports = demo.choose_ports({}, None, free_ports=False)
        assert ports.gateway_port != taken and ports.health["ingest"] not in (taken, 0)
        assert f"port {taken} is taken: the gateway uses {ports.gateway_port}" in ports.notes
        with pytest.raises(ConfigError, match=f"GATEWAY_PORT: {taken}: in use"):
            demo.choose_ports({"GATEWAY_PORT": str(taken)}, None, free_ports=False)
