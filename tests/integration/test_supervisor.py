"""`Supervisor` with real child processes: tiny Python scripts, no mocks.

Each script appends its pid to a file, so a test counts starts and checks afterwards, through
/proc, that nothing it started is still alive.
"""

from __future__ import annotations

import io
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from libs.config import BotsFile, api_key_hash, load_bots
from libs.errors import ConfigError
from libs.store import keys
from tests.support.polling import wait_until
from tools.run import demo
from tools.run.children import ChildSpec
from tools.run.redis_server import RedisServer
from tools.run.supervisor import Backoff, Supervisor

REPO = Path(__file__).parents[2]
FAST = Backoff(initial_s=0.1, max_s=0.2, healthy_after_s=30.0)
ETH = '{product_id: ETH-USDT, min_size: "0.00001", price_decimals: 2, leverage: 10, isolated: true}'
TWO_BOTS_YAML = f"""
    bots:
      - id: alpha
        api_key_env: ALPHA_API_KEY
        symbols: [{ETH}]
      - id: beta
        api_key_env: BETA_API_KEY
        symbols: [{ETH}]
"""
CONFIG_ERROR_LINE = "config error: bots[0].id: Bad Id: String should match pattern"
# SPEC 4.1 rule 3 and 6.1 rule 6: each worker's default HEALTH_PORT.
HEALTH_PORTS = {"ingest": 9101, "strategy": 9102, "accounting": 9103, "notify": 9104}

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


def test_the_demo_runs_five_services_each_worker_on_its_own_port_and_lease_owner_name() -> None:
    """Notify is the fifth (SPEC 6.1 rule 6): supervised, probed and named like accounting, and it
    gets the environment as it is, its webhooks' secrets and TELEGRAM_API_URL included."""
    assert demo.WORKER_HEALTH_PORTS == HEALTH_PORTS
    ports = demo.Ports("127.0.0.1", 8080, HEALTH_PORTS)
    base_env = {
        "REDIS_URL": "redis://127.0.0.1:6399/0",
        "HOOK_SECRET": "s" * 16,
        "TELEGRAM_API_URL": "http://127.0.0.1:8081",
    }
    specs = {spec.name: spec for spec in demo.service_specs(base_env, ports, ["--seed", "7"])}
    assert list(specs) == ["ingest", "strategy", "accounting", "notify", "gateway"]
    for name, port in HEALTH_PORTS.items():
        env = specs[name].env
        assert specs[name].argv[1:4] == ["-m", "tools.cli", name]
        assert (env["HEALTH_PORT"], env["WORKER_ID"]) == (str(port), f"run-{name}")
        assert env["REDIS_URL"] == base_env["REDIS_URL"]
    assert specs["ingest"].argv[4:] == ["--seed", "7"] and specs["notify"].argv[4:] == []
    for variable in ("HOOK_SECRET", "TELEGRAM_API_URL"):
        assert specs["notify"].env[variable] == base_env[variable]
    assert ports.readiness_urls()["notify"] == "http://127.0.0.1:9104/readyz"


# -- every bot's key (`bandwagon run` with a bots file of several bots) -------------------------


def two_bots(tmp_path: Path) -> BotsFile:
    path = tmp_path / "bots.yaml"
    path.write_text(textwrap.dedent(TWO_BOTS_YAML))
    return load_bots(path)


def test_every_bot_gets_its_own_key_kept_for_the_next_run_unless_the_environment_has_one(
    tmp_path: Path,
) -> None:
    bots = two_bots(tmp_path)
    first = demo.bot_api_keys(bots, tmp_path, {})
    assert [(k.bot, k.key.variable, k.key.origin) for k in first] == [
        ("alpha", "ALPHA_API_KEY", "generated"),
        ("beta", "BETA_API_KEY", "generated"),
    ]
    alpha, beta = (k.key for k in first)
    assert alpha.value != beta.value
    for key, name in ((alpha, "ALPHA_API_KEY.key"), (beta, "BETA_API_KEY.key")):
        assert key.path == tmp_path / name
        assert key.path.read_text() == key.value + "\n"
        assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert not (tmp_path / "demo-api-key").exists()  # no bot here uses $BOT_API_KEY
    assert demo.key_environment(first) == {"ALPHA_API_KEY": alpha.value, "BETA_API_KEY": beta.value}

    again = demo.bot_api_keys(bots, tmp_path, {})
    assert [(k.key.origin, k.key.value) for k in again] == [
        ("kept", alpha.value),
        ("kept", beta.value),
    ]

    given = "beta-" + "g" * 16
    mixed = demo.bot_api_keys(bots, tmp_path, {"BETA_API_KEY": given})
    assert [(k.key.origin, k.key.value) for k in mixed] == [
        ("kept", alpha.value),
        ("environment", given),
    ]
    assert beta.path is not None and beta.path.read_text() == beta.value + "\n"  # untouched


def test_bots_sharing_a_variable_or_a_key_are_a_config_error_that_never_shows_the_key(
    tmp_path: Path,
) -> None:
    bots = two_bots(tmp_path)
    shared = bots.model_copy(
        update={
            "bots": [bots.bots[0], bots.bots[1].model_copy(update={"api_key_env": "ALPHA_API_KEY"})]
        }
    )
    with pytest.raises(
        ConfigError, match=r"^config error: bots\[1\]\.api_key_env: ALPHA_API_KEY: bot alpha"
    ):
        demo.bot_api_keys(shared, tmp_path, {})
    assert not list(tmp_path.glob("*.key"))  # nothing generated for a file that cannot run

    alpha = demo.bot_api_keys(bots, tmp_path, {})[0].key.value
    with pytest.raises(ConfigError) as error:
        demo.bot_api_keys(bots, tmp_path, {"BETA_API_KEY": alpha})
    assert alpha not in str(error.value) and "same key as bot alpha" in str(error.value)


def test_the_banner_names_every_bot_s_key_and_signs_in_with_the_first(tmp_path: Path) -> None:
    bots = two_bots(tmp_path)
    ports = demo.Ports("127.0.0.1", 8080, HEALTH_PORTS)
    fresh = demo.bot_api_keys(bots, tmp_path, {})
    alpha, beta = (k.key for k in fresh)
    shown = demo.banner(ports, fresh, tmp_path / "logs", [], 0)
    assert f"  dashboard  http://127.0.0.1:8080/#key={alpha.value}\n" in shown
    indent = " " * (13 + len("alpha") + 2)
    assert (
        f"  apiKey     alpha  $ALPHA_API_KEY  {alpha.value}\n"
        f"{indent}(generated now and shown only this once; kept in {alpha.path}, mode 0600, "
        "for the next make run)\n"
        f"             beta   $BETA_API_KEY   {beta.value}\n"
        f"{indent}(generated now and shown only this once; kept in {beta.path}, mode 0600, "
        "for the next make run)\n"
    ) in shown
    assert f'--key "$(cat {alpha.path})"\n' in shown

    later = demo.bot_api_keys(bots, tmp_path, {"ALPHA_API_KEY": "alpha-" + "e" * 16})
    shown = demo.banner(ports, later, tmp_path / "logs", [], 0)
    assert alpha.value not in shown and beta.value not in shown
    assert "  dashboard  http://127.0.0.1:8080/  (enter a bot's apiKey" in shown
    assert (
        "  apiKey     alpha  $ALPHA_API_KEY  from the environment\n"
        f"             beta   $BETA_API_KEY   kept in {beta.path} (cat it to see it)\n"
    ) in shown
    assert '--key "$ALPHA_API_KEY"\n' in shown


def test_a_disabled_bot_gets_its_key_too_and_the_banner_is_for_the_first_enabled_one(
    tmp_path: Path,
) -> None:
    """A disabled bot is still served (STATUS `stop`), and accounting reads its key."""
    bots = two_bots(tmp_path)
    bots = bots.model_copy(
        update={"bots": [bots.bots[0].model_copy(update={"enabled": False}), bots.bots[1]]}
    )
    fresh = demo.bot_api_keys(bots, tmp_path, {})
    assert [(k.bot, k.enabled, k.key.origin) for k in fresh] == [
        ("alpha", False, "generated"),
        ("beta", True, "generated"),
    ]
    ports = demo.Ports("127.0.0.1", 8080, HEALTH_PORTS)
    shown = demo.banner(ports, fresh, tmp_path / "logs", [], 0)
    beta = fresh[1].key
    assert f"#key={beta.value}\n" in shown and f'--key "$(cat {beta.path})"\n' in shown


def test_the_demo_s_banner_reads_as_it_always_has(tmp_path: Path) -> None:
    bots = load_bots(REPO / "libs" / "demo-bots.yaml")
    ports = demo.Ports("127.0.0.1", 8080, HEALTH_PORTS)
    path = tmp_path / "demo-api-key"
    generated = demo.bot_api_keys(bots, tmp_path, {})
    value = generated[0].key.value
    shown = demo.banner(ports, generated, tmp_path / "logs", [], 0)
    assert f"  dashboard  http://127.0.0.1:8080/#key={value}\n" in shown
    assert (
        f"  apiKey     {value}\n{'':13}(generated now and shown only this once; kept in "
        f"{path}, mode 0600, for the next make run)\n"
    ) in shown
    assert f'--key "$(cat {path})"\n' in shown
    assert (
        "  readiness  ingest      http://127.0.0.1:9101/readyz\n"
        "             strategy    http://127.0.0.1:9102/readyz\n"
        "             accounting  http://127.0.0.1:9103/readyz\n"
        "             notify      http://127.0.0.1:9104/readyz\n"
        "             gateway     http://127.0.0.1:8080/readyz\n"
    ) in shown

    kept = demo.bot_api_keys(bots, tmp_path, {})
    shown = demo.banner(ports, kept, tmp_path / "logs", [], 0)
    assert "  dashboard  http://127.0.0.1:8080/  (enter the apiKey, or open it" in shown
    assert f"  apiKey     kept in {path} (cat it to see it)\n" in shown
    assert f"reusing the demo apiKey kept in {path}" in demo.start_text(
        RedisServer(tmp_path, port=6399, binary="redis-server"),
        tmp_path,
        True,
        kept,
        tmp_path,
        [],
        ports,
    )

    given = demo.bot_api_keys(bots, tmp_path, {"BOT_API_KEY": "e" * 16})
    shown = demo.banner(ports, given, tmp_path / "logs", [], 0)
    assert "  apiKey     from $BOT_API_KEY\n" in shown and '--key "$BOT_API_KEY"\n' in shown


def test_make_run_gives_every_bot_its_key_and_the_services_take_them_all(tmp_path: Path) -> None:
    """`bandwagon run` for real, with two bots, one key from the environment: accounting publishes
    both keys' hashes (what the gateway authenticates against), and the banner shows both."""
    config = tmp_path / "bots.yaml"
    config.write_text(textwrap.dedent(TWO_BOTS_YAML))
    run_dir, out = tmp_path / "run", tmp_path / "out.txt"
    given = "beta-" + "g" * 16
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env.update(BANDWAGON_CONFIG=str(config), BETA_API_KEY=given)
    argv = [sys.executable, "-m", "tools.cli", "run", "--run-dir", str(run_dir), "--free-ports"]
    with out.open("wb") as stdout:
        run = subprocess.Popen(
            [*argv, "--ready-timeout", "110", "--grace", "5"],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:

        def banner() -> str | None:
            text = out.read_text()
            assert run.poll() is None, f"bandwagon run exited {run.returncode}:\n{text}"
            return text if "Bandwagon demo is ready." in text else None

        shown = wait_until(banner, timeout_s=100, poll_s=0.2, what=lambda: out.read_text())
        alpha = (run_dir / "ALPHA_API_KEY.key").read_text().strip()
        assert not (run_dir / "BETA_API_KEY.key").exists()
        assert f"  apiKey     alpha  $ALPHA_API_KEY  {alpha}\n" in shown
        assert "             beta   $BETA_API_KEY   from the environment\n" in shown
        assert given not in shown
        port = re.search(r"redis-server on 127\.0\.0\.1:(\d+)", shown)
        assert port is not None
        inspector = (run_dir / "redis-users" / "inspector").read_text().strip()
        assert inspector not in shown, "no Redis password is printed"
        with Redis(
            port=int(port[1]), username="inspector", password=inspector, decode_responses=True
        ) as redis:
            assert redis.hgetall(keys.api_keys()) == {
                api_key_hash(alpha): "alpha",
                api_key_hash(given): "beta",
            }
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 0
    finally:
        if run.poll() is None:  # a second Ctrl-C kills what is left
            run.send_signal(signal.SIGINT)
            run.wait(timeout=30)


def test_each_secret_reaches_only_the_service_that_reads_it_and_each_its_redis_user(
    tmp_path: Path,
) -> None:
    """The gateway, which faces the internet, gets no apiKey and no receiver secret; accounting
    gets the keys, notify the secrets; each service its own Redis user (SPEC 4.1 rule 14)."""
    path = tmp_path / "bots.yaml"
    path.write_text(
        "bots:\n  - id: a\n    api_key_env: A_KEY\n    symbols: [{product_id: ETH-USDT}]\n"
        "    notify: [{url: 'https://h.example/x', secret_env: HOOK_SECRET}]\n"
    )
    bots = load_bots(path)
    base_env = {"REDIS_URL": "redis://x/0", "A_KEY": "k" * 20, "HOOK_SECRET": "s" * 20}
    passwords = {
        name: f"pw-{name}" for name in ("ingest", "strategy", "accounting", "notify", "gateway")
    }
    specs = demo.service_specs(
        base_env,
        demo.Ports("127.0.0.1", 8080, HEALTH_PORTS),
        [],
        passwords,
        demo.private_variables(bots),
    )
    for spec in specs:
        assert ("A_KEY" in spec.env) == (spec.name == "accounting"), spec.name
        assert ("HOOK_SECRET" in spec.env) == (spec.name == "notify"), spec.name
        assert spec.env["REDIS_USERNAME"] == spec.name
        assert spec.env["REDIS_PASSWORD"] == f"pw-{spec.name}"
