"""The notify worker's pure rules: the `notify:` config (SPEC 6.1 rule 1), the secrets, the
retry schedule (rule 4), the deliveries a fill makes (rule 2), and Telegram's short messages."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from libs.config import BotConfig, BotsFile, load_bots, public_url, read_notify_secrets
from libs.errors import ConfigError
from libs.store.notices import fills_in_id_order
from libs.wire.notifications import fill_deliveries, telegram_text
from services.notify.schedule import RetryPolicy

SECRET = "0123456789abcdef"  # 16 characters: the shortest secret


def bots_file(tmp_path: Path, notify: str) -> Path:
    path = tmp_path / "bots.yaml"
    path.write_text(
        "bots:\n  - id: demo\n    symbols: [{product_id: ETH-USDT}]\n    notify:\n" + notify
    )
    return path


def config_error(tmp_path: Path, notify: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_bots(bots_file(tmp_path, notify))
    return str(raised.value)


def test_a_webhook_defaults_to_all_four_events_and_stays_out_of_the_frozen_config(
    tmp_path: Path,
) -> None:
    bots = load_bots(bots_file(tmp_path, "      - {url: https://h.example/x, secret_env: S}\n"))
    (hook,) = bots.bots[0].notify
    assert hook.events == ("fill", "liquidation", "riskExit", "epoch")
    assert "notify" not in bots.bots[0].trading_config()  # may change freely (rule 1)


@pytest.mark.parametrize(
    ("entry", "path", "reason"),
    [
        ("{url: ftp://h.example/x, secret_env: S}", "notify[0].url", "https://"),
        ("{url: http://h.example/x, secret_env: S}", "notify[0].url", "allow_http"),
        ("{url: 'https:///x', secret_env: S}", "notify[0].url", "names no host"),
        ("{url: 'https://h.example:99999/x', secret_env: S}", "notify[0].url", "port"),
        ("{url: 'https://h.ex ample/x', secret_env: S}", "notify[0].url", "spaces"),
        ("{url: https://h.example/x}", "notify[0]", "secret_env"),
        ("{url: https://h.example/x, secret_env: S, events: [fill, trade]}", "events[1]", "fill"),
        ("{url: https://h.example/x, secret_env: S, events: [fill, fill]}", "events", "twice"),
        ("{url: https://h.example/x, secret_env: S, events: []}", "events", "at least one"),
        ("{telegram: {token_env: T, chat_id: 1}, secret_env: S}", "notify[0]", "no url"),
        ("{telegram: {token_env: T, chat_id: 'a b'}}", "chat_id", "@username"),
        ("{}", "notify[0]", "needs a url"),
    ],
)
def test_a_bad_webhook_is_a_config_error_naming_it(
    tmp_path: Path, entry: str, path: str, reason: str
) -> None:
    message = config_error(tmp_path, f"      - {entry}\n")
    assert message.startswith("config error: bots[0].notify[0]")
    assert path in message.split(": ")[1] and reason in message


def test_a_rejected_url_is_shown_without_its_query(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, "      - {url: 'http://u:pw@h.example/x?token=SECRET#f', secret_env: S}\n"
    )
    assert "SECRET" not in message and "pw" not in message
    assert "http://h.example/x" in message


def test_at_most_8_webhooks(tmp_path: Path) -> None:
    entries = "".join(f"      - {{url: https://h.example/{i}, secret_env: S}}\n" for i in range(9))
    assert "at most 8" in config_error(tmp_path, entries)


def test_public_url_drops_query_fragment_and_credentials() -> None:
    assert public_url("https://u:p@h.example:8443/a/b?t=1#x") == "https://h.example:8443/a/b"
    assert public_url("http://[::1]:9/x?q") == "http://[::1]:9/x"


def two_hooks() -> BotsFile:
    return BotsFile(
        bots=[
            BotConfig.model_validate(
                {
                    "id": "demo",
                    "symbols": [{"product_id": "ETH-USDT"}],
                    "notify": [
                        {"url": "https://h.example/x", "secret_env": "HOOK"},
                        {"telegram": {"token_env": "TG", "chat_id": "@bandwagon_fills"}},
                    ],
                }
            )
        ]
    )


def test_secrets_come_from_the_variables_the_entries_name() -> None:
    bots = two_hooks()
    token = "123:" + "a" * 30
    secrets = read_notify_secrets(bots, {"HOOK": SECRET, "TG": token})
    hooks = bots.bots[0].notify
    assert secrets[("demo", hooks[0].hook_id)].get_secret_value() == SECRET
    assert secrets[("demo", hooks[1].hook_id)].get_secret_value() == token
    assert hooks[0].hook_id != hooks[1].hook_id and len(hooks[0].hook_id) == 12


@pytest.mark.parametrize(
    ("environ", "shown", "reason"),
    [
        ({"TG": "123:" + "a" * 30}, "HOOK", "not set"),
        ({"HOOK": "short", "TG": "123:" + "a" * 30}, "***", "16 to 256"),
        ({"HOOK": "with a space 0123456789", "TG": "1:" + "a" * 30}, "***", "no space"),
        ({"HOOK": SECRET, "TG": "123:abc/../../x?y=" + "a" * 20}, "***", "Telegram bot token"),
    ],
)
def test_a_missing_or_malformed_secret_is_a_config_error_that_never_shows_it(
    environ: dict[str, str], shown: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        read_notify_secrets(two_hooks(), environ)
    message = str(raised.value)
    assert f": {shown}: " in message and reason in message
    for value in environ.values():
        assert value not in message


def test_backoff_doubles_from_1_s_to_5_min_with_full_jitter() -> None:
    policy = RetryPolicy()
    assert [policy.ceiling_s(n) for n in range(1, 12)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
        300,
    ]
    rng = random.Random(7)
    draws = [policy.delay_s(4, rng) for _ in range(2000)]
    assert 0 <= min(draws) < 0.1 and 7.9 < max(draws) <= 8  # uniform over [0, 8]
    assert 3.8 < sum(draws) / len(draws) < 4.2


def test_a_delivery_is_retried_for_24_h_from_its_creation_then_given_up() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    day_ms = 86_400_000
    wait = policy.next_wait_s(
        failures=30, created_ms=0, now_ms=day_ms - 10_000, retry_after_s=None, rng=rng
    )
    assert wait is not None and wait <= 10.0  # the last attempt falls on the deadline
    assert (
        policy.next_wait_s(failures=30, created_ms=0, now_ms=day_ms, retry_after_s=None, rng=rng)
        is None
    )


def test_a_receivers_retry_after_replaces_the_drawn_wait() -> None:
    wait = RetryPolicy().next_wait_s(
        failures=1, created_ms=0, now_ms=1000, retry_after_s=37.0, rng=random.Random(0)
    )
    assert wait == 37.0


TRADE: dict[str, Any] = {
    "order_id": 12,
    "time": 1_700_000_000_000,
    "type": "sell",
    "size": "0.50000",
    "price": "2100.25",
    "order_type": "maker",
    "action": "trailingStop_sell_long",
    "profit": 0.0123,
    "usdtProfit": 12.8,
    "position_side": "long",
}


def test_a_webhook_gets_one_delivery_per_kind_it_listens_to() -> None:
    made = fill_deliveries(
        bot="demo", epoch="e", product_id="ETH-USDT", trade=TRADE, listens=("riskExit", "fill")
    )
    assert [(delivery_id, kind) for delivery_id, kind, _ in made] == [
        ("e:12:fill", "fill"),
        ("e:12:riskExit", "riskExit"),
    ]
    assert (
        fill_deliveries(
            bot="demo", epoch="e", product_id="ETH-USDT", trade=TRADE, listens=("liquidation",)
        )
        == []
    )


def test_a_refresh_s_fills_go_out_by_order_id_across_symbols() -> None:
    published = [
        ("ETH-USDT", [b'{"order_id":3}', b'{"order_id":5}']),
        ("BTC-USDT", [b'{"order_id":4}']),
    ]
    assert [pid for pid, _ in fills_in_id_order(published)] == ["ETH-USDT", "BTC-USDT", "ETH-USDT"]


def test_telegram_messages_say_what_happened_in_one_glance() -> None:
    body = {"event": "riskExit", "bot": "demo", "product_id": "ETH-USDT", "trade": TRADE}
    assert telegram_text(body) == (
        "demo ETH-USDT: risk exit (trailingStop)\n"
        "sell 0.50000 at 2100.25 (maker), closes long\n"
        "PnL +12.80 USDT (+1.23 %)"
    )
    opening = {**TRADE, "type": "sell", "position_side": "short", "action": "RSI_sell_short"}
    assert telegram_text({**body, "event": "fill", "trade": opening}) == (
        "demo ETH-USDT: fill\nsell 0.50000 at 2100.25 (maker), opens short"
    )
    epoch = {"event": "epoch", "bot": "demo", "epoch": "00ff", "time": 1}
    assert telegram_text(epoch) == "demo: new epoch 00ff (state created, reset or lost)"


def test_a_small_pnl_in_a_coin_keeps_three_significant_digits() -> None:
    trade = {**TRADE, "usdtProfit": 0.000123, "profit": 0.0041}
    body = {"event": "fill", "bot": "b", "product_id": "ALT-BTC", "trade": trade}
    assert "PnL +0.000123 BTC (+0.41 %)" in telegram_text(body)


def test_a_receiver_listed_twice_or_an_unparsable_url_is_a_config_error(tmp_path: Path) -> None:
    twice = "      - {url: 'https://h.example/x?t=SECRET', secret_env: S}\n" * 2
    message = config_error(tmp_path, twice)
    assert "listed twice" in message and "SECRET" not in message
    message = config_error(tmp_path, "      - {url: 'https://[::1/x?t=SECRET', secret_env: S}\n")
    assert "not a URL" in message and "SECRET" not in message


def test_a_list_of_webhooks_in_an_error_line_shows_no_query(tmp_path: Path) -> None:
    entries = "".join(
        f"      - {{url: 'https://h.example/{i}?token=SECRET{i}', secret_env: S}}\n"
        for i in range(9)
    )
    message = config_error(tmp_path, entries)
    assert "at most 8" in message and "SECRET" not in message and "https://h.example/0" in message
