"""The demo's parts around the `Supervisor`: its keys, its ports, its services and what it prints.

Every bot of the bots file gets a key from the variable its `api_key_env` names: the variable's
value when set, else a key of the run dir's, generated once. SPEC 4.1 rule 10: no service ever
logs a key; `make run` may print a key it generated, once. So a generated key is shown in the
ready banner of the run that generated it and never again: later runs reuse it from its file in
the run dir (mode 0600; `.run/demo-api-key` for $BOT_API_KEY, `.run/<VARIABLE>.key` for another
variable) and say where it is.
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from libs.config import API_KEY_PATTERN, BotsFile, Settings, load_settings, read_api_keys
from libs.errors import ConfigError
from services.gateway.dashboard import vendor
from tools.run.children import ChildSpec
from tools.run.files import write_private
from tools.run.redis_server import RedisServer, new_passwords, user_env

# Each worker's default HEALTH_PORT (SPEC 4.1 rule 3; notify's: 6.1 rule 6).
WORKER_HEALTH_PORTS = {"ingest": 9101, "strategy": 9102, "accounting": 9103, "notify": 9104}
SERVICES = ("ingest", "strategy", "accounting", "notify", "gateway")
DEFAULT_GATEWAY_PORT: int = Settings.model_fields["gateway_port"].get_default()
DEMO_KEY_VARIABLE = "BOT_API_KEY"
KEY_FILE = "demo-api-key"  # $BOT_API_KEY's, named before other variables had files
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class ApiKey:
    value: str = field(repr=False)
    origin: Literal["environment", "generated", "kept"]
    path: Path | None = None
    variable: str = DEMO_KEY_VARIABLE


@dataclass(frozen=True, slots=True)
class BotKey:
    """A bot's key, as `make run` gives it to the services and shows it."""

    bot: str
    enabled: bool
    key: ApiKey


@dataclass
class Ports:
    gateway_host: str
    gateway_port: int
    health: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def client_host(self) -> str:
        """Where a local client reaches the gateway (a wildcard bind answers on loopback)."""
        return "127.0.0.1" if self.gateway_host in _WILDCARDS else self.gateway_host

    @property
    def ws_url(self) -> str:
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"ws://{host}:{self.gateway_port}/ws"

    @property
    def dashboard_url(self) -> str:
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{self.gateway_port}/"

    def readiness_urls(self) -> dict[str, str]:
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        urls = {name: f"http://127.0.0.1:{port}/readyz" for name, port in self.health.items()}
        urls["gateway"] = f"http://{host}:{self.gateway_port}/readyz"
        return urls


class Stoppable(Protocol):
    """What `announce_when_ready` needs of the `Supervisor`."""

    @property
    def stopping(self) -> bool: ...

    def say(self, text: str) -> None: ...

    def show(self, text: str) -> None: ...


# -- the keys ------------------------------------------------------------------------------------


def key_file(run_dir: Path, variable: str) -> Path:
    """Where the run dir keeps a key generated for `variable`. $BOT_API_KEY's keeps the name it
    had when it was the only one, so a run dir of an earlier version keeps its key."""
    return run_dir / (KEY_FILE if variable == DEMO_KEY_VARIABLE else f"{variable}.key")


def demo_api_key(
    run_dir: Path, environ: Mapping[str, str], variable: str = DEMO_KEY_VARIABLE
) -> ApiKey:
    """$variable if set; else the key an earlier run kept for it; else a new one, kept for next
    time in `key_file(run_dir, variable)`."""
    value = environ.get(variable, "")
    if value:
        if not API_KEY_PATTERN.fullmatch(value):
            raise ConfigError(
                variable,
                value,
                "must be 16 to 256 printable ASCII characters with no space",
                secret=True,
            )
        return ApiKey(value, "environment", variable=variable)
    path = key_file(run_dir, variable)
    if path.exists():
        value = path.read_text(encoding="ascii", errors="replace").strip()
        if not API_KEY_PATTERN.fullmatch(value):
            raise ConfigError(
                str(path),
                value,
                "not a valid key (16 to 256 printable ASCII, no space); delete it for a new one",
                secret=True,
            )
        path.chmod(0o600)
        return ApiKey(value, "kept", path, variable)
    value = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(value + "\n")
    return ApiKey(value, "generated", path, variable)


def bot_api_keys(bots: BotsFile, run_dir: Path, environ: Mapping[str, str]) -> list[BotKey]:
    """Every bot's key, in the bots file's order, by `demo_api_key` for its `api_key_env`.

    Disabled bots too: they are served (STATUS `stop`), and accounting reads every bot's key.
    Keys must differ across bots (SPEC 2.1 rule 16): two bots naming one variable is a config
    error before any key is made, and two variables holding one key is caught as accounting
    would catch it (`read_api_keys`), but before anything starts.
    """
    owners: dict[str, str] = {}
    for index, bot in enumerate(bots.bots):
        if bot.api_key_env in owners:
            raise ConfigError(
                f"bots[{index}].api_key_env",
                bot.api_key_env,
                f"bot {owners[bot.api_key_env]} names it too: each bot needs a variable, "
                "and a key, of its own",
            )
        owners[bot.api_key_env] = bot.id
    keys = [
        BotKey(bot.id, bot.enabled, demo_api_key(run_dir, environ, bot.api_key_env))
        for bot in bots.bots
    ]
    read_api_keys(bots, key_environment(keys))
    return keys


def key_environment(keys: Sequence[BotKey]) -> dict[str, str]:
    """The variables that give the services the bots' keys."""
    return {bot_key.key.variable: bot_key.key.value for bot_key in keys}


# -- ports ---------------------------------------------------------------------------------------


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as uvicorn binds)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError:
            return False
    return True


def _any_free_port(host: str, taken: set[int]) -> int:
    while True:
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host or "0.0.0.0", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port


def choose_ports(
    settings: Settings | Mapping[str, str], gateway_port: int | None, free_ports: bool
) -> Ports:
    """SPEC defaults (gateway 8080, workers 9101-9104) unless taken, then free ones, with a note.

    `settings` are the demo's (a mapping is read with `load_settings`). A gateway port the user
    asked for (flag or $GATEWAY_PORT) that is taken is a config error: silently moving it would
    break whatever expects it there.
    """
    if not isinstance(settings, Settings):
        settings = load_settings(settings)
    host = settings.gateway_host
    asked: int | None = gateway_port
    source = "--gateway-port"
    if asked is None and "gateway_port" in settings.model_fields_set:
        asked, source = settings.gateway_port, "GATEWAY_PORT"
    if asked is not None and not 0 <= asked <= 65535:
        raise ConfigError(source, asked, "not a port number (0-65535)")
    notes: list[str] = []
    taken: set[int] = set()
    if free_ports or asked == 0:
        port = _any_free_port(host, taken)
    elif asked is not None:
        if not port_is_free(host, asked):
            raise ConfigError(source, asked, f"in use on {host or '*'}: pick another, or 0 for any")
        port = asked
    elif port_is_free(host, DEFAULT_GATEWAY_PORT):
        port = DEFAULT_GATEWAY_PORT
    else:
        port = _any_free_port(host, taken)
        notes.append(f"port {DEFAULT_GATEWAY_PORT} is taken: the gateway uses {port}")
    taken.add(port)
    health: dict[str, int] = {}
    for name, default in WORKER_HEALTH_PORTS.items():
        # Checked on the wildcard address: ingest binds its side port on 0.0.0.0.
        if not free_ports and default not in taken and port_is_free("0.0.0.0", default):
            health[name] = default
        else:
            health[name] = _any_free_port("0.0.0.0", taken)
            if not free_ports:
                notes.append(f"port {default} is taken: {name} serves /readyz on {health[name]}")
        taken.add(health[name])
    return Ports(host, port, health, notes)


# -- processes -----------------------------------------------------------------------------------


def private_variables(bots: BotsFile) -> dict[str, set[str]]:
    """The secrets only one service reads, by service: the bots' apiKeys (accounting stores
    their hashes) and the receivers' secrets and tokens (notify signs and sends). The others,
    the gateway first, do not get them."""
    return {
        "accounting": {bot.api_key_env for bot in bots.bots},
        "notify": {hook.secret_variable for bot in bots.bots for hook in bot.notify},
    }


def service_specs(
    base_env: Mapping[str, str],
    ports: Ports,
    ingest_args: Sequence[str],
    passwords: Mapping[str, str] | None = None,
    private: Mapping[str, set[str]] | None = None,
) -> list[ChildSpec]:
    """The five services as `python -m tools.cli NAME`, each with its own port variables. Each
    gets all of `base_env`: notify reads its webhooks' secrets (the variables the bots file
    names), TELEGRAM_API_URL and its NOTIFY_* settings there, less the `private` variables of
    other services (the bots' apiKeys are accounting's, the receivers' secrets notify's). With
    `passwords`, each connects to Redis as its own user."""
    specs: list[ChildSpec] = []
    for name in SERVICES:
        others = set().union(*(v for k, v in (private or {}).items() if k != name))
        mine = (private or {}).get(name, set())
        env = {k: v for k, v in base_env.items() if k not in others or k in mine}
        env.update(user_env(passwords, name))  # its own Redis user (SPEC 4.1 rule 14)
        if name == "gateway":
            env.update(GATEWAY_HOST=ports.gateway_host, GATEWAY_PORT=str(ports.gateway_port))
        else:
            env["HEALTH_PORT"] = str(ports.health[name])
            # a stable id: a restarted worker takes its own leases back at once, not after 10 s
            env.setdefault("WORKER_ID", f"run-{name}")
        args = list(ingest_args) if name == "ingest" else []
        specs.append(ChildSpec(name, [sys.executable, "-m", "tools.cli", name, *args], env))
    return specs


REDIS_USERS_DIR = "redis-users"


def redis_passwords(run_dir: Path) -> dict[str, str]:
    """The demo Redis's user passwords (SPEC 4.1 rule 14): made once, kept in the run dir (one
    file per user, mode 0600, in a 0700 directory) so that `redis-cli` and `bandwagon reset` can
    use them; never printed."""
    folder = run_dir / REDIS_USERS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept = {path.name: path.read_text().strip() for path in folder.iterdir() if path.is_file()}
    made = new_passwords()
    passwords = {name: kept.get(name) or made[name] for name in made}
    for name, password in passwords.items():
        if kept.get(name) != password:
            write_private(folder / name, password + "\n")
    return passwords


def has_redis_data(redis_dir: Path) -> bool:
    return redis_dir.is_dir() and any(p.name != "redis.log" for p in redis_dir.iterdir())


# -- what the terminal shows ---------------------------------------------------------------------


def _shown(path: Path) -> str:
    """A path as the user can paste it: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _bandwagon_command() -> str:
    script = Path(sys.executable).parent / "bandwagon"
    if script.exists():
        shown = _shown(script)
        return shown if "/" in shown else f"./{shown}"
    return f"{shlex.quote(sys.executable)} -m tools.cli"


def start_text(
    redis: RedisServer,
    redis_dir: Path,
    resumed: bool,
    keys: Sequence[BotKey],
    log_dir: Path,
    specs: Sequence[ChildSpec],
    ports: Ports,
) -> str:
    state = (
        "resuming the previous run's state (--fresh starts over)" if resumed else "a fresh state"
    )
    lines = [
        f"bandwagon run: redis-server on 127.0.0.1:{redis.port}, data in {_shown(redis_dir)}: "
        f"{state}",
        f"bandwagon run: service logs (JSON lines) in {_shown(log_dir)}/: "
        + ", ".join(f"{spec.name}.log" for spec in specs),
    ]
    lines += [
        f"bandwagon run: reusing the {bot_key.bot} apiKey kept in {_shown(bot_key.key.path)}"
        for bot_key in keys
        if bot_key.key.origin == "kept" and bot_key.key.path is not None
    ]
    if redis.passwords is not None:
        users = _shown(redis_dir.parent / REDIS_USERS_DIR)
        tls = "" if redis.tls is None else f" --tls --cacert {_shown(redis.tls.ca)}"
        lines.append(
            f"bandwagon run: each service connects as its own Redis user; the passwords are in "
            f'{users}/. Read-only: REDISCLI_AUTH="$(cat {users}/inspector)" redis-cli -p '
            f"{redis.port}{tls} --user inspector"
        )
    else:
        lines.append(
            "bandwagon run: --default-redis-user: every service is Redis's default user (the "
            "quick start, not least privilege)"
        )
    lines += [f"bandwagon run: {note}" for note in ports.notes]
    return "\n".join(lines)


def _readyz_ok(opener: urllib.request.OpenerDirector, url: str) -> bool:
    try:
        with opener.open(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _charts_installed() -> bool:
    try:
        return vendor.is_installed(vendor.read_lock())
    except (OSError, ValueError, KeyError, vendor.VendorError):
        return False


def _first(keys: Sequence[BotKey]) -> BotKey:
    """The bot the dashboard link and `watch it` are for: the first enabled one."""
    return next((bot_key for bot_key in keys if bot_key.enabled), keys[0])


def _origin(key: ApiKey, indent: int, named: bool) -> str:
    """Where a key comes from: the value itself when generated now (the only time it is shown),
    else where it is. `named`: the variable is in a column of its own already."""
    if key.origin == "environment":
        return "from the environment" if named else f"from ${key.variable}"
    assert key.path is not None
    if key.origin == "generated":
        return (
            f"{key.value}\n{'':{indent}}(generated now and shown only this once; kept in "
            f"{_shown(key.path)}, mode 0600, for the next make run)"
        )
    return f"kept in {_shown(key.path)} (cat it to see it)"


def _key_lines(keys: Sequence[BotKey]) -> str:
    """One bot: its key as the demo's has always read. Several: a line per bot, with its id and
    variable."""
    if len(keys) == 1:
        return _origin(keys[0].key, 13, named=False)
    id_width = max(len(bot_key.bot) for bot_key in keys)
    variable_width = max(len(bot_key.key.variable) for bot_key in keys) + 1
    lines = [
        f"{bot_key.bot:<{id_width}}  {'$' + bot_key.key.variable:<{variable_width}}  "
        + _origin(bot_key.key, 13 + id_width + 2, named=True)
        for bot_key in keys
    ]
    return f"\n{'':13}".join(lines)


def banner(
    ports: Ports, keys: Sequence[BotKey], log_dir: Path, not_ready: Sequence[str], after_s: float
) -> str:
    if not_ready:
        logs = ", ".join(_shown(log_dir / f"{name}.log") for name in not_ready)
        head = (
            f"Not ready after {after_s:g} s: {', '.join(not_ready)} (see {logs}). "
            "Still supervising; a line follows when all are ready."
        )
    else:
        head = "Bandwagon demo is ready."
    key = _first(keys).key
    if key.origin == "environment":
        key_arg = f'"${key.variable}"'
    else:
        assert key.path is not None
        key_arg = f'"$(cat {shlex.quote(_shown(key.path))})"'
    urls = ports.readiness_urls()
    health = f"\n{'':13}".join(f"{name:<11} {urls[name]}" for name in SERVICES)
    if key.origin == "generated":  # the key is on screen this once anyway: a link that signs in
        dashboard = f"{ports.dashboard_url}#key={key.value}"
    else:
        which = "the apiKey" if len(keys) == 1 else "a bot's apiKey"
        dashboard = f"{ports.dashboard_url}  (enter {which}, or open it with #key=<apiKey>)"
    if not _charts_installed():
        dashboard += (
            f"\n{'':13}(no charts: the chart library is missing; "
            "python -m services.gateway.dashboard.vendor fetches it)"
        )
    return "\n".join(
        [
            "",
            f"  {head}",
            f"  dashboard  {dashboard}",
            f"  websocket  {ports.ws_url}",
            f"  apiKey     {_key_lines(keys)}",
            f"  readiness  {health}",
            f"  logs       {_shown(log_dir)}/<service>.log",
            f"  watch it   {_bandwagon_command()} watch --url {ports.ws_url} --key {key_arg}",
            "  stop       Ctrl-C (the state stays for the next make run)",
            "",
        ]
    )


def announce_when_ready(
    supervisor: Stoppable, ports: Ports, keys: Sequence[BotKey], log_dir: Path, timeout_s: float
) -> None:
    """Poll every service's /readyz; print the banner once all answer 200, or at the timeout with
    the laggards named (then one more line when they catch up). The banner is printed once."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    urls = ports.readiness_urls()
    started = time.monotonic()
    announced = False
    while not supervisor.stopping:
        not_ready = [name for name in SERVICES if not _readyz_ok(opener, urls[name])]
        if supervisor.stopping:
            return
        if not not_ready:
            if announced:
                supervisor.say("all five services are ready")
            else:
                supervisor.show(banner(ports, keys, log_dir, [], 0))
            return
        if not announced and time.monotonic() - started > timeout_s:
            supervisor.show(banner(ports, keys, log_dir, not_ready, timeout_s))
            announced = True
        time.sleep(0.25 if not announced else 1.0)


def stop_text(code: int, redis_dir: Path) -> str:
    if code == 0:
        return (
            f"bandwagon run: stopped. The state stays in {_shown(redis_dir)}: the next make run "
            "resumes it (make run ARGS=--fresh starts over)."
        )
    if code == 78:
        return "bandwagon run: stopped on a config error (exit 78); fix it and run again."
    return f"bandwagon run: stopped (exit {code})."
