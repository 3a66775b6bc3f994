"""The event kinds a webhook may listen to (SPEC 6.1 rules 1 and 2), on their own: the bots
file's parser checks them, and it must not load the trading core that classifying a fill needs
(`libs.wire.notifications`)."""

from __future__ import annotations

from typing import Literal, get_args

NotifyEvent = Literal["fill", "liquidation", "riskExit", "epoch"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)
