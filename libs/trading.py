"""Builds the pure core's inputs from a bot's config: the bridge the worker and backtest share.

This is also where a plug-in strategy (SPEC 3.2 rule 1) is imported and its parameters validated
by its own `Params` model: at start, so that anything wrong is a config error naming the field
(4.1 rule 7) before a single update is traded.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ValidationError

from libs.config import BotConfig
from libs.core.pnl import Ledger
from libs.core.risk_exits import RiskExits
from libs.core.sim_exchange import SymbolTerms
from libs.core.strategies import BUILT_IN, Strategy
from libs.core.strategies.contract import check_declaration
from libs.core.strategy import StrategyParams, SymbolStrategy
from libs.errors import ConfigError

WINDOW_LIMIT = 5000  # the largest window a built-in allows (SPEC 3.2 rules 6, 7)


def load_strategy(bot: BotConfig) -> Strategy:
    """The bot's strategy, built from its config; a `ConfigError` naming the field if the name
    does not import or a parameter fails the strategy's own validation."""
    return load_strategy_with_parameters(bot)[0]


def load_strategy_with_parameters(bot: BotConfig) -> tuple[Strategy, dict[str, Any]]:
    """The strategy and its own parameters as validated, defaults included (a plug-in's are
    only known once its `Params` model has read them): what is frozen with the bot's state."""
    config = bot.strategy
    if config.is_built_in:
        return BUILT_IN[config.name](**config.parameters), config.parameters
    return _plugin(bot, config.name, config.parameters)


def _plugin(
    bot: BotConfig, name: str, parameters: dict[str, Any]
) -> tuple[Strategy, dict[str, Any]]:
    path = f"bots[{bot.id}].strategy"
    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # whatever the user's module raises while importing
        raise ConfigError(
            f"{path}.name", name, f"cannot import {module_name}: {type(error).__name__}: {error}"
        ) from None
    strategy_class = getattr(module, class_name, None)
    if not (isinstance(strategy_class, type) and issubclass(strategy_class, Strategy)):
        raise ConfigError(
            f"{path}.name", name, f"{module_name} has no Strategy subclass named {class_name}"
        )
    try:
        check_declaration(strategy_class)
    except ValueError as error:
        raise ConfigError(f"{path}.name", name, str(error)) from None
    params_model = getattr(strategy_class, "Params", None)
    if not (isinstance(params_model, type) and issubclass(params_model, BaseModel)):
        raise ConfigError(
            f"{path}.name", name, "a plug-in declares its parameters as a pydantic model `Params`"
        )
    try:
        params = params_model.model_validate(parameters)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "name"
        raise ConfigError(f"{path}.{field}", first.get("input"), first["msg"]) from None
    try:
        strategy = strategy_class(params)  # type: ignore[call-arg]
    except Exception as error:
        raise ConfigError(f"{path}.name", name, f"{type(error).__name__}: {error}") from None
    window = getattr(strategy, "window", None)
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= WINDOW_LIMIT:
        raise ConfigError(f"{path}.window", window, f"must be an int in 1..{WINDOW_LIMIT}")
    return strategy, params.model_dump(mode="json")


def symbol_terms(bot: BotConfig, index: int, strategy: Strategy | None = None) -> SymbolTerms:
    symbol = bot.symbols[index]
    market = symbol.terms
    display_name = (strategy or load_strategy(bot)).name
    return SymbolTerms(
        index=index,
        symbol_count=len(bot.symbols),
        min_size=market.min_size,
        price_decimals=market.price_decimals,
        leverage=symbol.leverage,
        isolated=symbol.isolated,
        maker_fee_pct=bot.maker_fee,
        taker_fee_pct=bot.taker_fee,
        buy_pct=bot.strategy.buy_pct,
        slippage_pct=bot.strategy.slippage_pct,
        order_timeout_ms=bot.strategy.order_timeout_ms,
        strategy_name=display_name,
    )


def strategy_params(bot: BotConfig, strategy: Strategy | None = None) -> StrategyParams:
    config = bot.strategy
    return StrategyParams(
        strategy=strategy or load_strategy(bot),
        mode=config.mode,
        order_type=config.order_type,
        exits=RiskExits(
            stop_loss_pct=config.stop_loss_pct,
            take_profit_pct=config.take_profit_pct,
            trailing_stop_pct=config.trailing_stop_pct,
        ),
    )


def new_symbol_strategy(
    bot: BotConfig, index: int, strategy: Strategy | None = None
) -> SymbolStrategy:
    strategy = strategy or load_strategy(bot)
    return SymbolStrategy(
        terms=symbol_terms(bot, index, strategy),
        params=strategy_params(bot, strategy),
        ledger=Ledger(allocation=bot.allocation(index)),
    )
