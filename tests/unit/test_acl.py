"""The Redis users (SPEC 4.1 rule 14) as libs/store/acl.py derives them from the key schema."""

from __future__ import annotations

import hashlib
import inspect
from fnmatch import fnmatchcase

from libs.store import acl, keys
from tools.acl import main as acl_main

NOT_KEYS = {"market_name", "bot_from_refresh_channel", "bot_of", "bot_keys_pattern"}


def key_functions() -> dict[str, str]:
    """Every function of libs.store.keys that makes a key or channel, called with `*`s."""
    made = {}
    for name, function in inspect.getmembers(keys, inspect.isfunction):
        if name.startswith("_") or name in NOT_KEYS:
            continue
        made[name] = function(*["*"] * len(inspect.signature(function).parameters))
    return made


def test_every_key_of_the_schema_has_its_users_so_a_new_key_cannot_be_forgotten() -> None:
    made = key_functions()
    assert sorted(made) == sorted(acl.KEY_FUNCTIONS_COVERED)
    patterns = [*acl.ACCESS, *acl.CHANNELS]
    for name, key in made.items():
        if name in ("lease", "fence", "members"):  # split per service below
            continue
        assert any(fnmatchcase(key, pattern) for pattern in patterns), name
    for service, partition in (("strategy", "strategy:ETH-USDT"), ("accounting", "accounting")):
        for key in (keys.lease("b", partition), keys.fence("b", partition), keys.members(service)):
            assert [acl.ACCESS[p] for p in acl.ACCESS if fnmatchcase(key, p)] == [
                {service: "write"}
            ], key
    for key in (keys.lease("b", "notify"), keys.fence("b", "notify"), keys.members("notify")):
        assert [acl.ACCESS[p] for p in acl.ACCESS if fnmatchcase(key, p)] == [{"notify": "write"}]


def test_the_gateway_reads_the_published_layout_and_writes_nothing() -> None:
    gateway = acl.user("gateway")
    assert {access for _, access in gateway.keys} == {"read"}
    assert {pattern for pattern, _ in gateway.keys} == {
        keys.api_keys(),
        keys.meta("*"),
        keys.status("*"),
        keys.symbol("*", "*"),
        keys.klines("*", "*"),
        keys.trades("*", "*"),
        keys.refresh_log("*"),
    }
    assert gateway.channels == (keys.refresh_channel("*"),)
    rules = gateway.rules(redis_major=7).split()
    assert "+@write" not in rules and "+publish" not in rules and "+eval" not in rules


def test_each_worker_writes_only_its_own_jobs_keys() -> None:
    writes = {
        name: {pattern for pattern, access in acl.user(name).keys if access == "write"}
        for name in acl.SERVICES
    }
    assert writes["ingest"] == {keys.market_stream("*", "*", "*"), keys.market_terms("*", "*")}
    assert keys.status("*") not in writes["strategy"]
    assert keys.market_stream("*", "*", "*") not in writes["accounting"] | writes["notify"]
    assert writes["notify"] <= {
        keys.notify_feed("*"),
        keys.notify_state("*"),
        keys.deliveries("*", "*"),
        keys.lease("*", "notify"),
        keys.fence("*", "notify"),
        keys.commits("*"),
        keys.members("notify"),
    }
    assert writes["gateway"] == set()


def test_redis_6_2_gets_no_read_only_patterns_and_no_sharded_pub_sub() -> None:
    seven = acl.user("accounting").rules(redis_major=7)
    six = acl.user("accounting").rules(redis_major=6)
    assert f"%R~{keys.market_terms('*', '*')}" in seven.split()
    assert f"~{keys.market_terms('*', '*')}" in six.split() and "%R~" not in six
    assert "+spublish" in seven.split() and "+spublish" not in six.split()


def test_passwords_are_kept_as_their_sha256_and_the_default_user_is_off() -> None:
    passwords = {name: f"pw-{name}" for name in acl.USERS}
    text = acl.users_file(passwords, redis_major=7)
    assert "pw-gateway" not in text
    digest = hashlib.sha256(b"pw-gateway").hexdigest()
    assert "user gateway on " in text and f"#{digest}" in text
    assert text.splitlines()[0] == "user default off resetkeys -@all"
    assert len(text.splitlines()) == 1 + len(acl.USERS)


def test_the_users_file_in_the_repository_is_up_to_date() -> None:
    assert acl_main(["--check"]) == 0, "run make acl"
