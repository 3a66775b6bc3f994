"""Builds the pure core's inputs from a bot's config: the bridge the worker and backtest share."""

from __future__ import annotations

from libs.config import BotConfig
from libs.core.pnl import Ledger
from libs.core.sim_exchange import SymbolTerms
from libs.core.strategy import StrategyParams, SymbolStrategy


def symbol_terms(bot: BotConfig, index: int) -> SymbolTerms:
    symbol = bot.symbols[index]
    market = symbol.terms
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
        strategy_name=bot.strategy.name,
    )


def strategy_params(bot: BotConfig) -> StrategyParams:
    return StrategyParams(
        period=bot.strategy.period,
        nbdev_up=bot.strategy.nbdev_up,
        nbdev_dn=bot.strategy.nbdev_dn,
        mode=bot.strategy.mode,
        order_type=bot.strategy.order_type,
    )


def new_symbol_strategy(bot: BotConfig, index: int) -> SymbolStrategy:
    return SymbolStrategy(
        terms=symbol_terms(bot, index),
        params=strategy_params(bot),
        ledger=Ledger(allocation=bot.allocation(index)),
    )
