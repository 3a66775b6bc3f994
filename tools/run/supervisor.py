"""`bandwagon run`: the one-command demo (`make run`), and the `Supervisor` that keeps it running.

The supervisor treats the five services the way Kubernetes would: each is a child process in its
own process group, a child that dies is restarted with capped exponential backoff, and a child that
exits 78 (a config error, SPEC 4.1 rule 7) is not: everything stops and its line is shown, since a
restart cannot fix a config. Children write JSON log lines to `<log dir>/<service>.log`; the
terminal shows only starts, exits and the ready banner.

Shutdown (Ctrl-C, SIGTERM, SIGHUP) sends SIGTERM to every child's process group, waits for the
grace period (the services drain and commit, SPEC 4.1 rule 4), SIGKILLs what is left, and stops
redis-server last, so the services never lose Redis while they commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from tools.run.children import ChildSpec

CONFIG_ERROR_EXIT = 78  # SPEC 4.1 rule 7; libs.errors.ConfigError.exit_code
_TAIL_BYTES = 65_536
_OWN_MARK = '"logger":"bandwagon.run"'  # the supervisor's own lines in a child's log


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart delays: `initial_s` doubling to `max_s`; back to `initial_s` for a child that ran
    `healthy_after_s` before it died, so one crash after a day is not punished like a crash loop.
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    healthy_after_s: float = 30.0

    def next_delay_s(self, previous_s: float | None, ran_s: float) -> float:
        if previous_s is None or ran_s >= self.healthy_after_s:
            return self.initial_s
        return min(previous_s * 2, self.max_s)


@dataclass
class _Child:
    spec: ChildSpec
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at_s: float = 0.0
    log_offset: int = 0
    starts: int = 0
    last_delay_s: float | None = None
    restart_at_s: float | None = None
    pids: list[int] = field(default_factory=list)


def _kill_group(pid: int, signum: signal.Signals) -> None:
    """Signal the process group a child leads. Called only while the leader is not yet reaped,
    so the group id cannot have been reused by an unrelated process."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """True once the child has exited, without reaping it (WNOWAIT): its zombie keeps the process
    group id reserved until leftovers of the group are killed."""
    if process.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # macOS: reap at once, accept the tiny reuse window
        return process.poll() is not None
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return process.poll() is not None
    return info is not None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"by {signal.Signals(-code).name}"
        except ValueError:
            return f"by signal {-code}"
    return f"with {code}"


def _tail_lines(path: Path, offset: int) -> list[str]:
    """The non-empty lines a child wrote since `offset` (at most the last 64 KiB)."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - _TAIL_BYTES))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _readable(line: str, limit: int = 200) -> str:
    """A JSON log line as its message (plus the last line of its traceback); others as they are."""
    shown = line
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "msg" in record:
            shown = str(record["msg"])
            exc = record.get("exc")
            if isinstance(exc, str) and exc.strip():
                shown += f": {exc.strip().splitlines()[-1]}"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class Supervisor:
    """Starts every `ChildSpec`, restarts those that die, and stops them all on request.

    `run()` blocks and returns 0 after `request_stop()`, 78 when a child exited 78, or what
    `check()` returned (a hook called every poll, e.g. to watch redis-server). `request_stop()`
    only sets flags, so it is safe in a signal handler; a second call skips the grace period.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        log_dir: Path,
        *,
        grace_s: float = 10.0,
        backoff: Backoff | None = None,
        poll_interval_s: float = 0.05,
        out: TextIO | None = None,
        check: Callable[[], int | None] | None = None,
    ) -> None:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.backoff = backoff or Backoff()
        self.poll_interval_s = poll_interval_s
        self._out = out
        self._check = check
        self._children = [_Child(spec, log_dir / f"{spec.name}.log") for spec in specs]
        self._stop_requested = False
        self._force = False
        self._print_lock = threading.Lock()
        self.config_error: str | None = None

    # -- what callers and tests look at -------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def log_path(self, name: str) -> Path:
        return self._child(name).log_path

    def starts(self, name: str) -> int:
        return self._child(name).starts

    def pids(self) -> list[int]:
        """Every pid this supervisor ever started, in start order."""
        return [pid for child in self._children for pid in child.pids]

    def request_stop(self) -> None:
        if self._stop_requested:
            self._force = True
        self._stop_requested = True

    def say(self, text: str) -> None:
        """One timestamped status line on the terminal."""
        self.show(f"{time.strftime('%H:%M:%S')} {text}")

    def show(self, text: str) -> None:
        """A block of text on the terminal, never interleaved with another thread's."""
        with self._print_lock:
            print(text, file=self._out or sys.stdout, flush=True)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        self._rotate_logs()
        code = 0
        try:
            if not self._stop_requested:
                for child in self._children:
                    self._start(child)
                code = self._supervise()
        finally:
            self._shutdown()
        return code

    def _child(self, name: str) -> _Child:
        for child in self._children:
            if child.spec.name == name:
                return child
        raise KeyError(name)

    def _rotate_logs(self) -> None:
        """Keep the previous run's log as `<name>.log.1`; start each run with an empty one."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self._children:
            if child.log_path.exists() and child.log_path.stat().st_size:
                child.log_path.replace(child.log_path.with_name(child.log_path.name + ".1"))
            child.log_path.write_bytes(b"")

    def _note(self, child: _Child, message: str, **fields: object) -> None:
        """A JSON line of the supervisor's own in the child's log, between the child's lines."""
        now = time.time()
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now % 1 * 1000):03d}Z",
            "level": "INFO",
            "logger": "bandwagon.run",
            "msg": message,
            "service": child.spec.name,
            **fields,
        }
        with child.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(record, separators=(",", ":")) + "\n")

    def _start(self, child: _Child) -> None:
        child.starts += 1
        self._note(child, "starting", start=child.starts)
        child.log_offset = child.log_path.stat().st_size
        with child.log_path.open("ab") as log:
            child.process = subprocess.Popen(
                list(child.spec.argv),
                env=dict(child.spec.env),
                cwd=child.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # our Ctrl-C is not theirs: they get SIGTERM, in order
            )
        child.pids.append(child.process.pid)
        child.started_at_s = time.monotonic()
        child.restart_at_s = None
        again = f" (restart {child.starts - 1})" if child.starts > 1 else ""
        self.say(f"{child.spec.name:<11} started, pid {child.process.pid}{again}")

    def _supervise(self) -> int:
        while not self._stop_requested:
            now = time.monotonic()
            for child in self._children:
                if child.process is not None and _has_exited(child.process):
                    code = self._reap(child)
                    if code == CONFIG_ERROR_EXIT:
                        return self._config_error(child)
                    self._schedule_restart(child, code, now)
                elif child.process is None and child.restart_at_s is not None:
                    if now >= child.restart_at_s:
                        self._start(child)
            if self._check is not None:
                result = self._check()
                if result is not None:
                    return result
            time.sleep(self.poll_interval_s)
        return 0

    def _reap(self, child: _Child) -> int:
        """Kill what the dead child left in its group, then collect its exit status."""
        assert child.process is not None
        _kill_group(child.process.pid, signal.SIGKILL)
        code = child.process.wait()
        self._note(
            child, "exited", code=code, ran_s=round(time.monotonic() - child.started_at_s, 3)
        )
        return code

    def _config_error(self, child: _Child) -> int:
        """SPEC 4.1 rule 7: do not restart; stop everything and show the child's line."""
        lines = _tail_lines(child.log_path, child.log_offset)
        errors = [line for line in lines if line.startswith("config error:")]
        self.config_error = errors[-1] if errors else (_readable(lines[-1]) if lines else "")
        child.process = None
        self.say(f"{child.spec.name:<11} exited 78, a config error; not restarting, stopping all:")
        self.show(f"  {self.config_error or '(no output)'}\n  full log: {child.log_path}")
        return CONFIG_ERROR_EXIT

    def _schedule_restart(self, child: _Child, code: int, now: float) -> None:
        ran_s = now - child.started_at_s
        delay_s = self.backoff.next_delay_s(child.last_delay_s, ran_s)
        child.last_delay_s = delay_s
        child.restart_at_s = now + delay_s
        child.process = None
        lines = _tail_lines(child.log_path, child.log_offset)
        own = [line for line in lines if _OWN_MARK not in line]
        last = f": {_readable(own[-1])}" if own else ""
        self.say(
            f"{child.spec.name:<11} exited {describe_exit(code)} after {ran_s:.1f} s, "
            f"restarting in {delay_s:.1f} s{last}"
        )

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        running = [c for c in self._children if c.process is not None]
        for child in running:
            assert child.process is not None
            if not _has_exited(child.process):
                _kill_group(child.process.pid, signal.SIGTERM)
        if running:
            self.say(f"stopping {', '.join(c.spec.name for c in running)} (SIGTERM)")
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and not self._force:
            if all(_has_exited(c.process) for c in running if c.process is not None):
                break
            time.sleep(self.poll_interval_s)
        for child in running:
            process = child.process
            assert process is not None
            if not _has_exited(process):
                why = (
                    "a second Ctrl-C" if self._force else f"still running after {self.grace_s:g} s"
                )
                self.say(f"{child.spec.name:<11} {why}: SIGKILL")
            code = self._reap(child)
            if code not in (0, -signal.SIGTERM):
                self.say(f"{child.spec.name:<11} exited {describe_exit(code)} on shutdown")
            child.process = None


# -- `bandwagon run` -----------------------------------------------------------------------------


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bandwagon run",
        description="Run the demo: a private redis-server and the five services, supervised.",
        epilog="Examples: bandwagon run | bandwagon run --fresh | "
        "bandwagon run --replay tests/data/klines-1m-3000.csv --speed max",
    )
    parser.add_argument("--fresh", action="store_true", help="delete the demo's Redis data first")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(".run"),
        metavar="DIR",
        help="Redis data, logs and the bots' generated keys; default ./.run",
    )
    parser.add_argument(
        "--gateway-port",
        type=int,
        metavar="PORT",
        help="default $GATEWAY_PORT, else 8080 (another free port when 8080 is taken); 0 = any",
    )
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="use free ports for the gateway and health ports instead of 8080 and 9101-9104",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for every /readyz before printing the banner anyway; default 60",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="from SIGTERM to SIGKILL on shutdown; default 10",
    )
    parser.add_argument(
        "--appendfsync",
        choices=("everysec", "always"),
        default="everysec",
        help="the demo Redis's AOF durability: everysec (default) may lose the last second of "
        "writes on a host crash, which the services recompute under a new epoch; always loses "
        "none, at a cost per write (docs/reliability.md)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve the demo Redis over TLS only (rediss://), with a CA and certificate made in "
        "the run dir; the services trust the CA through REDIS_TLS_CA (needs a redis-server "
        "built with TLS, such as Debian's)",
    )
    parser.add_argument(
        "--default-redis-user",
        action="store_true",
        help="the quick start: every service connects as Redis's default user, not as its own "
        "(SPEC 4.1 rule 14; docs/security.md)",
    )
    ingest = parser.add_argument_group("market data, passed to `bandwagon ingest`")
    ingest.add_argument("--source", metavar="NAME", help="synthetic (default) or replay")
    ingest.add_argument(
        "--replay", action="append", metavar="[PRODUCT_ID=]FILE", help="a CSV to replay; repeatable"
    )
    ingest.add_argument("--speed", metavar="X|max", help="replay speed; default 60")
    ingest.add_argument("--seed", metavar="N", help="synthetic random walk seed")
    return parser.parse_args(argv)


def _ingest_argv(args: argparse.Namespace) -> list[str]:
    passed: list[str] = []
    if args.source:
        passed += ["--source", args.source]
    for replay in args.replay or []:
        passed += ["--replay", replay]
    if args.speed:
        passed += ["--speed", args.speed]
    if args.seed:
        passed += ["--seed", args.seed]
    return passed


def main(argv: list[str]) -> int:
    # Imported here so that tests of `Supervisor` need nothing of the demo's.
    from libs.config import load_bots, load_settings
    from tools.run import demo
    from tools.run.redis_server import RedisServer, free_port
    from tools.run.tls import make_tls_files

    args = _parse_args(argv)
    run_dir: Path = args.run_dir
    redis_dir = run_dir / "redis"
    log_dir = run_dir / "logs"
    # The services inherit this environment, less HEALTH_PORT: the demo gives each worker its own.
    inherited = {name: value for name, value in os.environ.items() if name != "HEALTH_PORT"}
    # A bad setting, bots file, key or port stops the demo here, before anything starts (exit 78).
    settings = load_settings(inherited)
    bots = load_bots(settings.config_path)
    ports = demo.choose_ports(settings, args.gateway_port, args.free_ports)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = demo.bot_api_keys(bots, run_dir, inherited)  # secrets, not settings (libs/config.py)
    if args.fresh and redis_dir.exists():
        shutil.rmtree(redis_dir)
        print(f"bandwagon run: --fresh: deleted {redis_dir}")
    resumed = demo.has_redis_data(redis_dir)
    # Absolute: redis-server changes into --dir before it opens --logfile.
    passwords = None if args.default_redis_user else demo.redis_passwords(run_dir)
    tls = make_tls_files(run_dir / "tls") if args.tls else None
    redis = RedisServer(
        data_dir=redis_dir.resolve(),
        port=free_port(),
        appendfsync=args.appendfsync,
        passwords=passwords,
        default_user=False,
        tls=tls,
    )

    base_env = dict(inherited)
    base_env.update(REDIS_URL=redis.url, PYTHONUNBUFFERED="1")
    if tls is not None:
        base_env["REDIS_TLS_CA"] = str(tls.ca.resolve())
    base_env.update(demo.key_environment(keys))  # every bot's, from its api_key_env
    specs = demo.service_specs(
        base_env, ports, _ingest_argv(args), passwords, demo.private_variables(bots)
    )

    def check_redis() -> int | None:
        """Restart redis-server if it died (same port and data); give up if it cannot start."""
        if redis.process is None or redis.process.poll() is None:
            return None
        supervisor.say(f"redis-server exited {describe_exit(redis.process.returncode)}; restarting")
        try:
            redis.start()
        except RuntimeError as error:
            supervisor.say(f"redis-server: {error}")
            return 1
        supervisor.say(f"redis-server is back on port {redis.port}; the services reconnect")
        return None

    supervisor = Supervisor(specs, log_dir, grace_s=args.grace, check=check_redis)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        supervisor.request_stop()

    previous = {
        signum: signal.signal(signum, on_signal)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        try:
            redis.start()
        except RuntimeError as error:
            print(f"bandwagon run: {error}", file=sys.stderr)
            return 1
        try:
            print(
                demo.start_text(redis, redis_dir, resumed, keys, log_dir, specs, ports), flush=True
            )
            waiter = threading.Thread(
                target=demo.announce_when_ready,
                args=(supervisor, ports, keys, log_dir, args.ready_timeout),
                name="readiness",
                daemon=True,
            )
            waiter.start()
            code = supervisor.run()
        finally:
            redis.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(demo.stop_text(code, redis_dir), flush=True)
    return code
