"""Configuration: one YAML file of bots (SPEC 4.1 rule 10) plus environment variables (12-factor).

Loaded once in each service's `main()` and passed down. Anything wrong stops the start with a
`ConfigError` naming the path, the value and the reason (SPEC 4.1 rule 7); a secret's value is
shown as `***`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import socket
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from libs.errors import ConfigError
from libs.wire.notify_events import NOTIFY_EVENTS, NotifyEvent

BOT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
API_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{16,256}$")
WEBHOOK_SECRET_PATTERN = API_KEY_PATTERN  # SPEC 6.1 rule 1: the same shape as an apiKey
# A Telegram bot token as BotFather gives it (`<bot id>:<secret>`); it goes into the Bot API's
# URL path, so nothing that could change the URL (`/`, `?`, `#`) may pass.
TELEGRAM_TOKEN_PATTERN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,128}$")
DEFAULT_CONFIG_PATH = Path(__file__).with_name("demo-bots.yaml")
# SPEC 2.1 rule 14's kline sizes, <n>m, <n>h, <n>d, as the bots file may give them. The core's
# periods module reads sizes the same way for period ids; config keeps its own copy so that a
# service that only reads settings (the gateway) never loads the trading core.
_KLINE_SIZE = re.compile(r"^([1-9][0-9]{0,3})([mhd])$")
_KLINE_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def plain_positive_decimal(value: str) -> str:
    """min_size is sent as configured and sizes take its decimals (SPEC 2.1 rule 13)."""
    if not re.fullmatch(r"\d+(\.\d+)?", value):
        raise ValueError("must be a plain decimal string such as '0.00001'")
    try:
        if Decimal(value) <= 0:
            raise ValueError("must be greater than 0")
    except InvalidOperation as error:
        raise ValueError("must be a decimal number") from error
    return value


class MarketTerms(_Model):
    """What a source says about a symbol's orders: the size step and the price decimals (SPEC
    section 2 SYMBOL.min_size, 2.1 rule 13). Stored per market, frozen per bot."""

    min_size: str
    price_decimals: int = Field(ge=0, le=18)

    @field_validator("min_size")
    @classmethod
    def _plain_positive_decimal(cls, value: str) -> str:
        return plain_positive_decimal(value)


class BollingerParams(_Model):
    """SPEC section 3: `BollingerBands`'s own parameters."""

    period: int = Field(20, ge=2, le=1000)
    nbdev_up: float = Field(2.0, ge=0, le=100)
    nbdev_dn: float = Field(2.0, ge=0, le=100)


class RSIParams(_Model):
    """SPEC 3.2 rule 6."""

    period: int = Field(14, ge=2, le=1000)
    window: int = Field(100, le=5000)
    oversold: float = Field(30.0, gt=0, lt=100)
    overbought: float = Field(70.0, gt=0, lt=100)

    @model_validator(mode="after")
    def _consistent(self) -> RSIParams:
        if self.window < self.period + 1:
            raise PydanticCustomError(
                "strategy_parameter",
                "window {value} must be at least period + 1 ({least})",
                {"field": "window", "value": self.window, "least": self.period + 1},
            )
        if not self.oversold < self.overbought:
            raise PydanticCustomError(
                "strategy_parameter",
                "oversold must be below overbought ({overbought})",
                {"field": "oversold", "value": self.oversold, "overbought": self.overbought},
            )
        return self


class MACDParams(_Model):
    """SPEC 3.2 rule 7."""

    fast: int = Field(12, ge=2, le=1000)
    slow: int = Field(26, ge=2, le=1000)
    signal: int = Field(9, ge=1, le=1000)
    window: int = Field(200, le=5000)

    @model_validator(mode="after")
    def _consistent(self) -> MACDParams:
        if not self.fast < self.slow:
            raise PydanticCustomError(
                "strategy_parameter",
                "fast must be below slow ({slow})",
                {"field": "fast", "value": self.fast, "slow": self.slow},
            )
        least = self.slow + self.signal - 1
        if self.window < least:
            raise PydanticCustomError(
                "strategy_parameter",
                "window {value} must be at least slow + signal - 1 ({least})",
                {"field": "window", "value": self.window, "least": least},
            )
        return self


BUILT_IN_STRATEGY_PARAMS: dict[str, type[_Model]] = {
    "BollingerBands": BollingerParams,
    "RSI": RSIParams,
    "MACD": MACDParams,
}
# SPEC 3.2 rule 1: any other strategy is a plug-in, `package.module:Class`.
PLUGIN_STRATEGY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class StrategyConfig(BaseModel):
    """A bot's strategy (SPEC 3.2): its name, the parameters every strategy shares (section 3,
    3.2 rule 8, 3.3), and the strategy's own parameters beside them in the same mapping.

    A built-in's own parameters are validated here, defaults filled in, so the frozen trading
    config (SPEC 4.1 rule 6) pins them; a plug-in's are kept as given and validated by its own
    `Params` model when the strategy worker or the backtest loads it (`libs.trading`), because
    this module is loaded by services that must not import user code.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = "BollingerBands"
    mode: Literal["both", "long", "short"] = "both"
    order_type: Literal["maker", "taker"] = "maker"
    buy_pct: float = Field(20.0, gt=0, le=100)
    order_timeout_ms: int = Field(60_000, ge=0)
    slippage_pct: float = Field(0.05, ge=0, lt=100)
    stop_loss_pct: float | None = Field(None, gt=0, le=1000)
    take_profit_pct: float | None = Field(None, gt=0, le=1000)
    trailing_stop_pct: float | None = Field(None, gt=0, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _own_parameters(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("name", "BollingerBands")
        shared = {key: value for key, value in data.items() if key in cls.model_fields}
        own = {key: value for key, value in data.items() if key not in cls.model_fields}
        params_model = BUILT_IN_STRATEGY_PARAMS.get(name) if isinstance(name, str) else None
        if params_model is not None:
            try:
                params = params_model.model_validate(own)
            except ValidationError as error:
                first = error.errors()[0]
                context = first.get("ctx") or {}
                field = context.get("field") or ".".join(str(part) for part in first["loc"])
                value = context.get("value", first.get("input"))
                raise PydanticCustomError(
                    "strategy_parameter",
                    "{message}",
                    {"field": field, "value": value, "message": first["msg"]},
                ) from None
            return {**shared, **params.model_dump()}
        if not isinstance(name, str) or PLUGIN_STRATEGY.fullmatch(name) is None:
            raise PydanticCustomError(
                "strategy_parameter",
                "{message}",
                {
                    "field": "name",
                    "value": name,
                    "message": "must be BollingerBands, RSI, MACD or a plug-in "
                    "as package.module:Class",
                },
            )
        return data

    @property
    def parameters(self) -> dict[str, Any]:
        """The strategy's own parameters (all but the shared ones)."""
        return dict(self.model_extra or {})

    @property
    def is_built_in(self) -> bool:
        return self.name in BUILT_IN_STRATEGY_PARAMS


# SPEC 4.1 rule 10's `min_size` and `price_decimals`, for a symbol whose bots file leaves them out
# where no exchange supplies them: every source but ccxt, and a backtest of a bots file.
DEFAULT_TERMS = MarketTerms(min_size="0.00001", price_decimals=2)


class SymbolConfig(_Model):
    """One symbol a bot trades, with SPEC 4.1 rule 10's defaults. `min_size` and
    `price_decimals` are None here when the file leaves them out, because the source decides:
    the `ccxt` source supplies the exchange's (SPEC 4.1 rule 6), every other source
    `DEFAULT_TERMS`. Given, they override the source. Either way they are frozen with the bot's
    state (SPEC 4.1 rule 6)."""

    product_id: str = Field(pattern=r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")
    min_size: str | None = None
    price_decimals: int | None = Field(None, ge=0, le=18)
    leverage: float = Field(10.0, ge=1, le=200)
    isolated: bool = True
    weight: float = Field(1.0, gt=0)

    @field_validator("min_size")
    @classmethod
    def _plain_positive_decimal(cls, value: str | None) -> str | None:
        return None if value is None else plain_positive_decimal(value)

    @property
    def has_market_terms(self) -> bool:
        """Both terms known: nothing to wait for from the source."""
        return self.min_size is not None and self.price_decimals is not None

    @property
    def terms(self) -> MarketTerms:
        """The terms to trade with; a ConfigError where the bots file left them to a source and
        they were not filled in (`BotConfig.with_market_terms`), as in a backtest."""
        if self.min_size is None or self.price_decimals is None:
            missing = "min_size" if self.min_size is None else "price_decimals"
            raise ConfigError(
                f"symbols[{self.product_id}].{missing}",
                "(not set)",
                "needed here: the source supplies it when the bots file leaves it out",
            )
        return MarketTerms(min_size=self.min_size, price_decimals=self.price_decimals)

    @property
    def asset(self) -> str:
        return self.product_id.split("-", 1)[0]

    @property
    def currency(self) -> str:
        return self.product_id.split("-", 1)[1]


MAX_WEBHOOKS = 8  # SPEC 6.1 rule 1
_VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_TELEGRAM_CHAT = re.compile(r"^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")


def public_url(url: str) -> str:
    """A webhook URL as logs, errors and `bandwagon notify test` may show it: scheme, host, port
    and path. The query string, a fragment and user:password@ are dropped, since that is where
    receivers put their tokens (SPEC 6.1 rule 6)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # `https://[::1/x`: refused anyway; nothing of it is shown
        return "(not a URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a port out of range: the URL is refused anyway, show no number
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _without_url_secrets(value: object) -> object:
    """A config value as an error line may show it: every URL in it (a list of webhooks, an
    entry, a string) without its query, fragment or credentials."""
    if isinstance(value, str):
        return public_url(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {key: _without_url_secrets(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_url_secrets(item) for item in value]
    return value


class TelegramChat(_Model):
    """Where a Telegram entry sends its messages: the bot token's variable (a token is a
    secret, like an apiKey: never in the bots file) and the chat, a number or `@channel`."""

    token_env: str = Field(pattern=_VARIABLE_NAME)
    chat_id: int | str

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _TELEGRAM_CHAT.fullmatch(value):
            return int(value) if value.lstrip("-").isdigit() else value
        raise PydanticCustomError(
            "telegram_chat", "must be a chat's number (-100123...) or a channel's @username"
        )


class Webhook(_Model):
    """One `notify:` entry (SPEC 6.1 rule 1): a signed HTTP webhook (`url`, `secret_env`) or a
    Telegram chat (`telegram`), and the event kinds it hears. Not trading config: a change takes
    effect at the next start of the notify worker, and no state is frozen with it."""

    url: str | None = Field(None, max_length=2048, repr=False)
    secret_env: str | None = Field(None, pattern=_VARIABLE_NAME)
    allow_http: bool = False
    telegram: TelegramChat | None = None
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS

    @field_validator("events")
    @classmethod
    def _events_once_each(cls, value: tuple[NotifyEvent, ...]) -> tuple[NotifyEvent, ...]:
        if not value:
            raise ValueError(f"must list at least one of {', '.join(NOTIFY_EVENTS)}")
        if len(set(value)) != len(value):
            raise ValueError("lists an event kind twice")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> Webhook:
        if self.telegram is not None:
            if self.url is not None or self.secret_env is not None or self.allow_http:
                raise ValueError(
                    "a telegram entry takes no url, secret_env or allow_http (messages are "
                    "sent to the Bot API, authenticated by its token)"
                )
            return self
        if self.url is None:
            raise ValueError("needs a url (with secret_env) or telegram: {token_env, chat_id}")
        if self.secret_env is None:
            raise ValueError("a webhook needs secret_env, the variable holding its HMAC secret")
        problem = _url_problem(self.url, allow_http=self.allow_http)
        if problem is not None:
            raise PydanticCustomError("webhook_url", problem, {"url": public_url(self.url)})
        return self

    @property
    def target(self) -> str:
        """The receiver as logs may name it: the URL without its query, or the Telegram chat."""
        if self.telegram is not None:
            return f"telegram chat {self.telegram.chat_id}"
        assert self.url is not None
        return public_url(self.url)

    @property
    def secret_variable(self) -> str:
        """The variable holding this entry's secret: the HMAC key, or the Telegram bot token."""
        if self.telegram is not None:
            return self.telegram.token_env
        assert self.secret_env is not None
        return self.secret_env

    @property
    def hook_id(self) -> str:
        """A short, stable name of the receiver for Redis keys: the same URL (or chat) keeps its
        pending deliveries across restarts and reorderings of the list, a new one starts empty.
        Derived by hashing, so a key never shows a URL's secrets."""
        identity = (
            f"telegram:{self.telegram.token_env}:{self.telegram.chat_id}"
            if self.telegram is not None
            else f"url:{self.url}"
        )
        return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _url_problem(url: str, *, allow_http: bool) -> str | None:
    """Why `url` cannot be a webhook's, or None: an absolute https URL (http with allow_http)
    naming a host, without spaces or control characters."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        return "a URL has no spaces or control characters"
    try:
        parts = urlsplit(url)
    except ValueError as error:
        return f"is not a URL ({error})"
    if parts.scheme not in ("https", "http"):
        return "must be an https:// URL (http:// with allow_http: true)"
    if parts.scheme == "http" and not allow_http:
        return "http:// needs allow_http: true (deliveries would travel unencrypted)"
    if not parts.hostname:
        return "names no host"
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        return "has a port out of range"
    return None


class BotConfig(_Model):
    id: str = Field(pattern=BOT_ID_PATTERN)
    api_key_env: str = Field("BOT_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    enabled: bool = True
    exchange: str = Field("mexc", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    kline_size: str = "1m"
    start_capital: float = Field(1000.0, gt=0)
    maker_fee: float = Field(0.1, ge=0, lt=100)
    taker_fee: float = Field(0.1, ge=0, lt=100)
    refresh_interval_ms: int = Field(1000, ge=100, le=60_000)
    kline_history: int = Field(300, ge=1, le=1000)
    trade_history: int = Field(500, ge=1, le=1000)
    refresh_log_len: int = Field(1000, ge=100)
    strategy: StrategyConfig = StrategyConfig()
    symbols: list[SymbolConfig] = Field(min_length=1, max_length=50)
    notify: list[Webhook] = Field(default_factory=list, max_length=MAX_WEBHOOKS)

    @field_validator("notify")
    @classmethod
    def _one_entry_per_receiver(cls, value: list[Webhook]) -> list[Webhook]:
        seen: set[str] = set()
        for hook in value:
            if hook.hook_id in seen:
                raise ValueError(
                    f"{hook.target} is listed twice: list it once, with all the events it hears"
                )
            seen.add(hook.hook_id)
        return value

    @field_validator("kline_size")
    @classmethod
    def _known_kline_size(cls, value: str) -> str:
        if _KLINE_SIZE.fullmatch(value) is None:
            raise ValueError(
                f"kline size {value!r} must be <n>m, <n>h or <n>d, e.g. 1m, 5m, 1h, 1d"
            )
        return value

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[SymbolConfig]) -> list[SymbolConfig]:
        seen: set[str] = set()
        for symbol in value:
            if symbol.product_id in seen:
                raise ValueError(f"product_id {symbol.product_id} is listed twice")
            seen.add(symbol.product_id)
        return value

    @cached_property
    def period_ms(self) -> int:
        size = _KLINE_SIZE.fullmatch(self.kline_size)
        assert size is not None  # validated above
        return int(size.group(1)) * _KLINE_UNIT_MS[size.group(2)]

    def trading_config(self) -> dict[str, Any]:
        """The part of the config frozen with the bot's state (SPEC 4.1 rule 6)."""
        return {
            "exchange": self.exchange,
            "kline_size": self.kline_size,
            "start_capital": self.start_capital,
            "maker_fee": self.maker_fee,
            "taker_fee": self.taker_fee,
            "strategy": self.strategy.model_dump(),
            "symbols": [symbol.model_dump() for symbol in self.symbols],
        }

    @property
    def has_market_terms(self) -> bool:
        return all(symbol.has_market_terms for symbol in self.symbols)

    def with_market_terms(self, terms: Mapping[str, MarketTerms]) -> BotConfig:
        """The bot with each term the bots file leaves out taken from `terms` (by product id);
        a term the file gives is kept, so the file overrides what a source supplies."""
        symbols = []
        for symbol in self.symbols:
            found = terms.get(symbol.product_id)
            if symbol.has_market_terms or found is None:
                symbols.append(symbol)
                continue
            symbols.append(
                symbol.model_copy(
                    update={
                        "min_size": symbol.min_size or found.min_size,
                        "price_decimals": (
                            found.price_decimals
                            if symbol.price_decimals is None
                            else symbol.price_decimals
                        ),
                    }
                )
            )
        return self.model_copy(update={"symbols": symbols})

    def allocation(self, symbol_index: int) -> float:
        """SPEC 4.1 rule 10: start_capital * weight / sum of weights, left to right."""
        total_weight = 0.0
        for symbol in self.symbols:
            total_weight += symbol.weight
        return self.start_capital * self.symbols[symbol_index].weight / total_weight


class BotsFile(_Model):
    bots: list[BotConfig] = Field(min_length=1)
    market_stream_len: int = Field(1_000_000, ge=1000)

    @field_validator("bots")
    @classmethod
    def _unique_ids(cls, value: list[BotConfig]) -> list[BotConfig]:
        seen: set[str] = set()
        for bot in value:
            if bot.id in seen:
                raise ValueError(f"bot id {bot.id} is listed twice")
            seen.add(bot.id)
        return value

    @property
    def enabled_bots(self) -> list[BotConfig]:
        return [bot for bot in self.bots if bot.enabled]

    def bot(self, bot_id: str) -> BotConfig:
        for bot in self.bots:
            if bot.id == bot_id:
                return bot
        raise ConfigError("bots[].id", bot_id, "no bot with this id in the config")


# -- the environment -------------------------------------------------------------------------------
#
# Every setting is a field of a pydantic-settings model, read from the variable named after it:
# the field's name in upper case (after the model's prefix), or its `validation_alias` where the
# name differs. Nothing lists the variables, so a new field cannot be left unread. Secrets are no
# settings: a bot's key is read by `read_api_keys`, from the variable its `api_key_env` names.

MarketSource = Literal["synthetic", "replay", "ccxt"]
MARKET_SOURCES: tuple[MarketSource, ...] = get_args(MarketSource)


def _comma_separated(value: object) -> object:
    """A list variable is comma-separated (not JSON, pydantic-settings' default): `a, b` is
    ("a", "b"); blanks are dropped. Given a sequence (in code), it is kept."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class _EnvironmentSettings(BaseSettings):
    """Read only by `load_settings` and `load_ingest_settings`, from the environment (or the
    mapping tests pass). Constructing one reads nothing but its arguments, so a model built in
    code never depends on the environment of the process that builds it."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", validate_default=False, env_ignore_empty=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class Settings(_EnvironmentSettings):
    """Everything a service reads from the environment, with SPEC defaults."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # SPEC 4.1 rule 13: REDIS_URL names any node of a Redis Cluster (libs.store.client)
    redis_cluster: bool = False
    # SPEC 4.1 rule 14: the service's own Redis user (deploy/redis-users.acl); none: the
    # default user, the quick start. A password never goes into REDIS_URL, which logs may show.
    redis_username: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    redis_password: SecretStr | None = None
    # `rediss://` URLs: the CA that signed the server's certificate (PEM file); none: the
    # system's CAs
    redis_tls_ca: Path | None = None
    config_path: Path = Field(DEFAULT_CONFIG_PATH, validation_alias="BANDWAGON_CONFIG")
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    gateway_max_message_bytes: int = Field(65_536, ge=1024)
    gateway_auth_timeout_s: float = Field(10.0, gt=0)
    gateway_rate_burst: int = Field(20, ge=1)
    gateway_rate_per_s: float = Field(10.0, gt=0)
    gateway_auth_fails_per_min: int = Field(20, ge=1)
    gateway_trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    gateway_send_queue: int = Field(64, ge=1)
    gateway_send_stall_s: float = Field(10.0, gt=0)
    gateway_ping_interval_s: float = Field(20.0, gt=0)
    gateway_ping_timeout_s: float = Field(20.0, gt=0)
    gateway_drain_s: float = Field(10.0, gt=0)
    gateway_allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    log_level: str = "INFO"
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    )
    lease_ttl_s: float = Field(10.0, ge=1.0)
    # the notify worker (SPEC 6.1): the Bot API's base URL (a local stand-in in tests), and how
    # long a failing delivery is retried from its creation before it is dropped (24 h)
    telegram_api_url: str = Field("https://api.telegram.org", pattern=r"^https?://[^\s?#]+$")
    notify_retry_for_s: float = Field(86_400.0, gt=0)

    @field_validator("gateway_trusted_proxies", "gateway_allowed_origins", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _comma_separated(value)


class ExchangeSettings(_EnvironmentSettings):
    """Where CCXT reaches each exchange, for ingest's ccxt source and `bandwagon download` alike
    (`BANDWAGON_CCXT_URLS`)."""

    model_config = SettingsConfigDict(env_prefix="BANDWAGON_")

    ccxt_urls: str = ""  # JSON {exchange: {endpoint: url}}, parsed by `libs.exchange.markets`


class IngestSettings(ExchangeSettings):
    """`bandwagon ingest`'s market source, from `BANDWAGON_<FIELD>`; its flags of the same names
    (`--stale-periods` is `stale_periods`) win over the variables (`load_ingest_settings`)."""

    source: MarketSource | None = None  # None: replay when files are given, else synthetic
    replay: Annotated[tuple[str, ...], NoDecode] = ()  # [PRODUCT_ID=]FILE each
    speed: float = 60.0  # event time per wall time; 0 = as fast as possible
    seed: int = 1  # the synthetic random walk's
    stale_periods: float = 3.0  # ccxt: no word from the exchange for this many kline periods
    ccxt_websocket: bool = True  # ccxt: False polls REST even where CCXT has websockets

    @field_validator("replay", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        return _comma_separated(value)

    # The reasons are ingest's own (PydanticCustomError: no "Value error, " before them).

    @field_validator("source", mode="before")
    @classmethod
    def _known_source(cls, value: object) -> object:
        if value is not None and value not in MARKET_SOURCES:
            raise PydanticCustomError("source", f"must be one of {', '.join(MARKET_SOURCES)}")
        return value

    @field_validator("speed", mode="before")
    @classmethod
    def _speed_or_max(cls, value: object) -> float:
        if isinstance(value, str) and value.strip().lower() == "max":
            return 0.0
        speed = _float_or_nan(value)
        if not (math.isfinite(speed) and speed >= 0):
            raise PydanticCustomError("speed", "must be a number >= 0, or max (0 = max)")
        return speed

    @field_validator("seed", mode="before")
    @classmethod
    def _integer(cls, value: object) -> int:
        try:
            return int(value if isinstance(value, int | str) else "?")
        except ValueError:
            raise PydanticCustomError("seed", "not an integer") from None

    @field_validator("stale_periods", mode="before")
    @classmethod
    def _positive_periods(cls, value: object) -> float:
        periods = _float_or_nan(value)
        if not (math.isfinite(periods) and periods > 0):
            raise PydanticCustomError("stale_periods", "must be a number of periods > 0")
        return periods

    @field_validator("ccxt_websocket", mode="before")
    @classmethod
    def _one_or_zero(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text not in ("0", "1", "false", "true", "no", "yes", ""):
            raise PydanticCustomError("ccxt_websocket", "must be 1 or 0")
        return text not in ("0", "false", "no")


def _float_or_nan(value: object) -> float:
    """A number as `float()` reads it (" 2.5", "1e3", "inf"); anything else is nan."""
    try:
        return float(value if isinstance(value, int | float | str) else "nan")
    except ValueError:
        return math.nan


def _variable_name(model: type[BaseSettings], field: str) -> str:
    """The environment variable a field of a settings model is read from."""
    alias = model.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    return (model.model_config.get("env_prefix", "") + field).upper()


class _Environment(EnvSettingsSource):
    """pydantic-settings' reading of the environment (names, empty = unset), from a given mapping
    rather than always `os.environ`. Only names spelled in upper case count: `redis_url` is not
    `REDIS_URL`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        variables = {name: value for name, value in self._environ.items() if name == name.upper()}
        return parse_env_vars(
            variables, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


_Read = TypeVar("_Read", bound=_EnvironmentSettings)


def _read(
    model: type[_Read], environ: Mapping[str, str] | None, flags: Mapping[str, object]
) -> _Read:
    """`model` from the environment, `flags` (by field name) winning over it; a bad value is a
    `ConfigError` naming its variable, or its flag (`--stale-periods` for `stale_periods`)."""
    env = os.environ if environ is None else environ
    values = {key: value for key, value in _Environment(model, env)().items() if key not in flags}
    try:
        return model.model_validate({**values, **flags})
    except ValidationError as error:
        first = error.errors()[0]
        field = next(
            name
            for name, info in model.model_fields.items()
            if first["loc"][0] in (name, info.validation_alias)
        )
        if field in flags:
            raise ConfigError(f"--{field.replace('_', '-')}", flags[field], first["msg"]) from None
        variable = _variable_name(model, field)
        raise ConfigError(variable, env.get(variable, ""), first["msg"]) from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read `Settings` from the environment; a bad value names its variable."""
    return _read(Settings, environ, {})


def load_exchange_settings(environ: Mapping[str, str] | None = None) -> ExchangeSettings:
    return _read(ExchangeSettings, environ, {})


def load_ingest_settings(
    environ: Mapping[str, str] | None = None, flags: Mapping[str, object] | None = None
) -> IngestSettings:
    """Read `IngestSettings` from the environment, the command line's `flags` (values by field
    name) winning over the variables: a variable a flag overrides is not even checked."""
    return _read(IngestSettings, environ, flags or {})


def error_location(error: ErrorDetails) -> tuple[tuple[int | str, ...], object]:
    """Where a validation error lies and the value there; a strategy's own parameter, which
    `StrategyConfig` validates as a whole, is named as its own field (SPEC 3.2 rule 1)."""
    loc, value = tuple(error["loc"]), error.get("input")
    context = error.get("ctx") or {}
    if error["type"] == "strategy_parameter":
        return (*loc, *str(context["field"]).split(".")), context.get("value")
    if error["type"] == "webhook_url":
        return (*loc, "url"), context["url"]
    if "notify" in loc:  # a webhook's URL is shown without its query (SPEC 6.1 rule 6)
        value = _without_url_secrets(value)
    return loc, value


def first_message(error: ValidationError) -> str:
    return error.errors()[0]["msg"]


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it (its wheels are): the same documents,
about 10x faster than the pure-Python one, which took ~3 s of each service's start for a bots
file of 1,000 bots."""


def load_bots(path: Path) -> BotsFile:
    """Parse and validate the bots file; the first problem becomes a `ConfigError`."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except OSError as error:
        raise ConfigError(str(path), str(path), f"cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(str(path), str(path), f"not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(str(path), type(document).__name__, "must be a mapping with `bots:`")
    try:
        return BotsFile.model_validate(document)
    except ValidationError as error:
        loc, value = error_location(error.errors()[0])
        raise ConfigError(_error_path(loc) or str(path), value, first_message(error)) from None


def api_key_hash(api_key: str) -> str:
    """Redis holds only this lowercase hex SHA-256 of a key (SPEC 2.1 rule 16)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def read_api_keys(bots: BotsFile, environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
    """Each enabled bot's key from the variable its `api_key_env` names, checked per SPEC 5.1
    rule 10 and unique across bots. Only services that write `bw:apikeys` need the keys."""
    env = os.environ if environ is None else environ
    keys: dict[str, SecretStr] = {}
    owners: dict[str, str] = {}
    for index, bot in enumerate(bots.bots):
        path = f"bots[{index}].api_key_env"
        value = env.get(bot.api_key_env)
        if value is None:
            raise ConfigError(path, bot.api_key_env, "environment variable is not set")
        if not API_KEY_PATTERN.fullmatch(value):
            raise ConfigError(
                f"{path} ({bot.api_key_env})",
                value,
                "must be 16 to 256 printable ASCII characters with no space",
                secret=True,
            )
        if value in owners:
            raise ConfigError(
                f"{path} ({bot.api_key_env})",
                value,
                f"same key as bot {owners[value]}",
                secret=True,
            )
        owners[value] = bot.id
        keys[bot.id] = SecretStr(value)
    return keys


def read_notify_secrets(
    bots: BotsFile, environ: Mapping[str, str] | None = None, *, only: str | None = None
) -> dict[tuple[str, str], SecretStr]:
    """Each webhook's secret (HMAC key or Telegram token) by (bot id, hook id), from the variable
    its entry names: a missing or malformed one is a config error at the notify worker's start
    (SPEC 6.1 rule 1), shown as `***`. `only`: one bot's (`bandwagon notify test`)."""
    env = os.environ if environ is None else environ
    secrets: dict[tuple[str, str], SecretStr] = {}
    for bot_index, bot in enumerate(bots.bots):
        if only is not None and bot.id != only:
            continue
        for index, hook in enumerate(bot.notify):
            variable = hook.secret_variable
            path = f"bots[{bot_index}].notify[{index}]." + (
                "telegram.token_env" if hook.telegram is not None else "secret_env"
            )
            value = env.get(variable)
            if value is None:
                raise ConfigError(path, variable, "environment variable is not set")
            pattern, shape = (
                (TELEGRAM_TOKEN_PATTERN, "a Telegram bot token, <digits>:<20-128 of A-Za-z0-9_->")
                if hook.telegram is not None
                else (WEBHOOK_SECRET_PATTERN, "16 to 256 printable ASCII characters with no space")
            )
            if not pattern.fullmatch(value):
                raise ConfigError(f"{path} ({variable})", value, f"must be {shape}", secret=True)
            secrets[(bot.id, hook.hook_id)] = SecretStr(value)
    return secrets
