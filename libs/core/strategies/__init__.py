"""Strategies (SPEC 3.2): the contract every strategy meets and the three built in."""

from libs.core.strategies.bollinger import BollingerBands
from libs.core.strategies.contract import Evaluation, KlineWindow, Strategy, WindowBatch
from libs.core.strategies.macd import MACD
from libs.core.strategies.rsi import RSI

BUILT_IN: dict[str, type[Strategy]] = {
    "BollingerBands": BollingerBands,
    "RSI": RSI,
    "MACD": MACD,
}

__all__ = ["BUILT_IN", "MACD", "RSI", "BollingerBands", "Evaluation", "KlineWindow", "Strategy"]
__all__ += ["WindowBatch"]
