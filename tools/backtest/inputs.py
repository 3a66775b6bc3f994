"""What a backtest runs on: the bot (a bots file's, or the demo's, with flags applied) and the
market updates of its files. Shared by a single run and by every run of a sweep.

Every bad value becomes a `ConfigError` naming the option and the value (exit 78, SPEC 4.1 rule 7).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from libs.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TERMS,
    BotConfig,
    StrategyConfig,
    SymbolConfig,
    error_location,
    load_bots,
)
from libs.core.batch import UpdateColumns
from libs.core.strategies.contract import Bools, Ints
from libs.errors import ConfigError
from libs.exchange.market_files import (
    FileKind,
    Reject,
    file_kind,
    price_decimals_of,
    read_market_columns,
)

_PRODUCT_PREFIX = re.compile(r"^([A-Z0-9]{1,20}-[A-Z0-9]{1,20})=(.+)$")

# Flags that override the bot's trading config: option name -> where it lands in `BotConfig`.
# These are also the sweepable parameters. `--nbdev` sets both deviations; `--strategy` picks
# another strategy (its own parameters then start from its defaults); any other NAME of
# `--param NAME=VALUE` or `--sweep NAME=...` is a parameter of the strategy's own (a plug-in's).
STRATEGY_OPTIONS = {
    "mode": "mode",
    "order-type": "order_type",
    "buy-pct": "buy_pct",
    "order-timeout-ms": "order_timeout_ms",
    "slippage-pct": "slippage_pct",
    "stop-loss-pct": "stop_loss_pct",
    "take-profit-pct": "take_profit_pct",
    "trailing-stop-pct": "trailing_stop_pct",
}
# The built-ins' own parameters (SPEC section 3, 3.2 rules 6 and 7).
OWN_PARAMETER_OPTIONS = {
    "period": "period",
    "nbdev-up": "nbdev_up",
    "nbdev-dn": "nbdev_dn",
    "window": "window",
    "oversold": "oversold",
    "overbought": "overbought",
    "fast": "fast",
    "slow": "slow",
    "signal": "signal",
}
RISK_EXIT_OPTIONS = ("stop-loss-pct", "take-profit-pct", "trailing-stop-pct")
OFF = ("off", "none", "null")  # a risk exit's value that turns it off (a sweep may list it)
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
BOT_OPTIONS = {"maker-fee": "maker_fee", "taker-fee": "taker_fee", "start-capital": "start_capital"}
SYMBOL_OPTIONS = {
    "leverage": "leverage",
    "min-size": "min_size",
    "price-decimals": "price_decimals",
}
OVERRIDE_OPTIONS = (
    "strategy",
    "nbdev",
    *OWN_PARAMETER_OPTIONS,
    *STRATEGY_OPTIONS,
    *BOT_OPTIONS,
    *SYMBOL_OPTIONS,
)
PARAM_PREFIX = "param:"  # an override of a plug-in's own parameter: `param:NAME`


@dataclass(frozen=True, slots=True)
class MarketFile:
    product_id: str
    path: Path
    kind: FileKind


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Updates with from_ms <= event time < to_ms; None is unbounded."""

    from_ms: int | None = None
    to_ms: int | None = None

    def holds(self, time_ms: int) -> bool:
        return (self.from_ms is None or time_ms >= self.from_ms) and (
            self.to_ms is None or time_ms < self.to_ms
        )

    def holds_all(self, time_ms: Ints) -> Bools:
        """`holds` of each event time."""
        inside: Bools = np.ones(len(time_ms), dtype=np.bool_)
        if self.from_ms is not None:
            inside &= time_ms >= self.from_ms
        if self.to_ms is not None:
            inside &= time_ms < self.to_ms
        return inside


# --- the bot -------------------------------------------------------------------------------------


def choose_bot(config: Path | None, bot_id: str | None, symbol: str | None) -> BotConfig:
    """The bot of `--config`/`--bot` (the file's first bot by default), all its symbols as
    configured, so the run is what that bot would trade live.

    Without `--config`: the demo file's first bot narrowed to one symbol, which then gets the
    whole start capital. A demo symbol that `--symbol` names keeps its terms. Otherwise (no
    `--symbol`, or a product the demo does not list) the demo's first symbol stands in under the
    file's name with no `price_decimals`: they are read off the file (`infer_price_decimals`),
    as the demo's 2 would write a price of 0.0016 as 0.00.
    """
    if config is not None:
        bots = load_bots(config)
        bot = bots.bot(bot_id) if bot_id is not None else bots.bots[0]
        if symbol is not None and symbol not in [s.product_id for s in bot.symbols]:
            listed = ", ".join(s.product_id for s in bot.symbols)
            raise ConfigError("--symbol", symbol, f"bot {bot.id} has no such symbol ({listed})")
        return bot
    if bot_id is not None:
        raise ConfigError("--bot", bot_id, "needs --config FILE: the demo file is used without it")
    demo = load_bots(DEFAULT_CONFIG_PATH).bots[0]
    data = demo.model_dump()
    named = [candidate for candidate in demo.symbols if candidate.product_id == symbol]
    if named:
        data["symbols"] = [named[0].model_dump()]
        return _validated(data, "--symbol", symbol)
    stand_in = demo.symbols[0]
    product_id = symbol or stand_in.product_id
    data["symbols"] = [{**stand_in.model_dump(), "product_id": product_id, "price_decimals": None}]
    return _validated(data, "--symbol", product_id)


def demo_stands_in(config: Path | None, symbol: str | None) -> bool:
    """Whether `choose_bot` lends the demo's first symbol to a product it does not describe."""
    if config is not None:
        return False
    return symbol not in [s.product_id for s in load_bots(DEFAULT_CONFIG_PATH).bots[0].symbols]


def infer_price_decimals(
    bot: BotConfig, files: Sequence[MarketFile]
) -> tuple[BotConfig, list[str]]:
    """The bot with the missing `price_decimals` of each symbol given a file read off that file
    (`price_decimals_of`: the most decimals among its prices), and a note for each, for the
    report and the JSON.

    Only where neither a flag nor a bots file gives them: the demo's stand-in (`choose_bot`;
    a bots file's silence means SPEC's defaults, `with_default_terms`). A file shows its prices,
    so this is a fair reading of the market's tick; it shows no size step, so `min_size` is
    never inferred.
    """
    paths = {market_file.product_id: market_file.path for market_file in files}
    symbols: list[SymbolConfig] = []
    notes: list[str] = []
    for symbol in bot.symbols:
        path = paths.get(symbol.product_id)
        decimals = None
        if symbol.price_decimals is None and path is not None:
            decimals = price_decimals_of(path)  # None for a file without a valid row
        if decimals is None:
            symbols.append(symbol)
            continue
        symbols.append(symbol.model_copy(update={"price_decimals": decimals}))
        notes.append(
            f"{symbol.product_id}: price_decimals {decimals}, the most decimals among the prices"
            f" of {path} (--price-decimals sets it)"
        )
    return bot.model_copy(update={"symbols": symbols}), notes


def stand_in_min_size_note(bot: BotConfig) -> str:
    """What the report says when `choose_bot` lent the demo's first symbol to another product:
    its price decimals are read off the file, but its `min_size` stays the demo's."""
    symbol = bot.symbols[0]
    stand_in = load_bots(DEFAULT_CONFIG_PATH).bots[0].symbols[0].product_id
    return (
        f"{symbol.product_id}: min_size {symbol.min_size}, the demo's {stand_in} step:"
        " a market file does not show its market's (--min-size sets it)"
    )


def with_default_terms(bot: BotConfig, flagged: set[str]) -> tuple[BotConfig, list[str]]:
    """A bots file's symbol silent on `min_size` or `price_decimals` trades, as it would live on
    a replay or synthetic source, with SPEC 4.1 rule 10's defaults (`DEFAULT_TERMS`), so a
    backtest and a live replay of one bots file agree; a note says so for each, unless a flag
    set the term. Only a live ccxt source supplies an exchange's terms instead."""
    defaults = {symbol.product_id: DEFAULT_TERMS for symbol in bot.symbols}
    notes = [
        f"{symbol.product_id}: {' and '.join(silent)} SPEC's default"
        f" (min_size {DEFAULT_TERMS.min_size}, price_decimals {DEFAULT_TERMS.price_decimals}):"
        " the bots file leaves them out (--min-size, --price-decimals set them)"
        for symbol in bot.symbols
        if (
            silent := [
                name
                for name in ("min_size", "price_decimals")
                if getattr(symbol, name) is None and name.replace("_", "-") not in flagged
            ]
        )
    ]
    return bot.with_market_terms(defaults), notes


def _validated(data: dict[str, Any], option: str, value: object) -> BotConfig:
    try:
        return BotConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(option, value, first["msg"]) from None


def apply_overrides(
    bot: BotConfig, overrides: Mapping[str, str], product_ids: Sequence[str]
) -> BotConfig:
    """The bot with each flag's value in place, validated by the config's own model, so a flag
    obeys the same bounds as the YAML field. Symbol flags apply to the symbols given files."""
    if not overrides:
        return bot
    data = bot.model_dump()
    placed: dict[tuple[str, ...], tuple[str, object]] = {}  # field path -> (option, value)
    # --strategy first (it drops the old strategy's own parameters), then --nbdev, so that the
    # specific --nbdev-up/--nbdev-dn win over it
    ordered = sorted(
        overrides.items(), key=lambda item: (item[0] != "strategy", item[0] != "nbdev")
    )
    for option, text in ordered:
        value: object = text
        targets: list[tuple[str, ...]]
        if option == "strategy":
            shared = {
                name: field
                for name, field in data["strategy"].items()
                if name in StrategyConfig.model_fields
            }
            data["strategy"] = {**shared, "name": text}
            placed[("strategy", "name")] = (option, text)
            continue
        if option in RISK_EXIT_OPTIONS and text.strip().lower() in OFF:
            value = None
        if option == "nbdev":
            targets = [("strategy", "nbdev_up"), ("strategy", "nbdev_dn")]
        elif option in OWN_PARAMETER_OPTIONS:
            targets = [("strategy", OWN_PARAMETER_OPTIONS[option])]
        elif option.startswith(PARAM_PREFIX):
            name = option.removeprefix(PARAM_PREFIX)
            if PARAMETER_NAME.fullmatch(name) is None:
                raise ConfigError("--param", f"{name}={text}", "NAME must be an identifier")
            targets = [("strategy", name)]
        elif option in STRATEGY_OPTIONS:
            targets = [("strategy", STRATEGY_OPTIONS[option])]
        elif option in BOT_OPTIONS:
            targets = [(BOT_OPTIONS[option],)]
        elif option in SYMBOL_OPTIONS:
            targets = [
                ("symbols", str(index), SYMBOL_OPTIONS[option])
                for index, symbol in enumerate(bot.symbols)
                if symbol.product_id in product_ids
            ]
        else:
            raise ConfigError(
                option, value, f"not a parameter; one of {', '.join(OVERRIDE_OPTIONS)}"
            )
        for target in targets:
            _set(data, target, value)
            placed[target] = (option, text)
    try:
        return BotConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        located, value = error_location(first)
        loc = tuple(str(part) for part in located)
        option, shown_value = next(
            (found for path, found in placed.items() if loc[: len(path)] == path),
            ("--config", str(value)),
        )
        if option.startswith(PARAM_PREFIX):
            option, shown_value = "--param", f"{option.removeprefix(PARAM_PREFIX)}={shown_value}"
        shown = option if option.startswith("--") else f"--{option}"
        raise ConfigError(shown, shown_value, first["msg"]) from None


def _set(data: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[path[-1]] = value


# --- the data ------------------------------------------------------------------------------------


def parse_market_file(option: str, text: str, bot: BotConfig, symbol: str | None) -> MarketFile:
    """`[PRODUCT_ID=]FILE`, as `bandwagon ingest --replay` takes it; without a product the file
    feeds `--symbol`, or the bot's first symbol. The file's header must match the flag."""
    match = _PRODUCT_PREFIX.fullmatch(text.strip())
    product_id, path = (
        (match.group(1), Path(match.group(2))) if match else (symbol, Path(text.strip()))
    )
    product_id = product_id or bot.symbols[0].product_id
    if product_id not in [s.product_id for s in bot.symbols]:
        raise ConfigError(option, text, f"bot {bot.id} has no symbol {product_id}")
    kind = file_kind(path)
    wanted = FileKind.KLINES if option == "--klines" else FileKind.TRADES
    if kind is not wanted:
        other = "--trades" if kind is FileKind.TRADES else "--klines"
        raise ConfigError(option, text, f"is a {kind.value} file: give it with {other}")
    return MarketFile(product_id, path, kind)


def parse_time_ms(option: str, text: str) -> int:
    """Unix ms, or an ISO date or date-time (UTC unless it names an offset)."""
    stripped = text.strip()
    if re.fullmatch(r"-?\d+", stripped) and len(stripped.lstrip("-")) > 8:
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ConfigError(
            option, text, "must be Unix ms or an ISO date such as 2017-11-10 or 2017-11-10T12:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def report_rejects(path: Path) -> Callable[[Reject], None]:
    """Skipped rows go to stderr, as ingest logs them: the run sees exactly the updates ingest
    would write (SPEC 5.1 rule 11)."""

    def on_reject(reject: Reject) -> None:
        print(
            f"{path}:{reject.line}: row skipped: {reject.field}={reject.value!r}: {reject.reason}",
            file=sys.stderr,
        )

    return on_reject


@lru_cache(maxsize=4)
def load_updates(
    files: tuple[MarketFile, ...], period_ms: int, time_range: TimeRange, quiet: bool = False
) -> Mapping[str, UpdateColumns]:
    """Every accepted update of each file within the range, by product, as columns (what the
    core's batch path takes). Cached (so treat it as read-only): a sweep's worker process reads
    the files once for all its runs."""
    updates: dict[str, UpdateColumns] = {}
    for market_file in files:
        on_reject = None if quiet else report_rejects(market_file.path)
        columns = read_market_columns(market_file.path, period_ms, on_reject)
        if time_range != TimeRange():
            columns = columns.take(time_range.holds_all(columns.time_ms))
        updates[market_file.product_id] = columns
    return updates


def check_market_files(files: Sequence[MarketFile]) -> None:
    seen: set[str] = set()
    if not files:
        raise ConfigError(
            "--klines", "", "give a klines file (--klines) or a trades file (--trades)"
        )
    for market_file in files:
        if market_file.product_id in seen:
            raise ConfigError(
                "--klines/--trades",
                market_file.product_id,
                "one file per symbol: this symbol is given two",
            )
        seen.add(market_file.product_id)
