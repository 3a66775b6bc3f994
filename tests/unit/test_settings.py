"""Settings from the environment (libs/config.py): each variable is named after its field, by
pydantic-settings, so no list of names can miss one; a bad value names its variable (SPEC 4.1
rule 7); lists are comma-separated; an empty variable is unset."""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from libs.config import (
    IngestSettings,
    Settings,
    load_ingest_settings,
    load_settings,
)
from libs.errors import ConfigError
from libs.ops.health import VERSION

REPO = Path(__file__).parents[2]

Loader = Callable[[Mapping[str, str]], BaseSettings]
MODELS: list[tuple[type[BaseSettings], Loader]] = [
    (Settings, load_settings),
    (IngestSettings, load_ingest_settings),
]

# A value other than the default for every field, as the variable holds it and as it is read.
# A field added without a sample here fails the first test: it is read all the same.
SAMPLES: dict[str, tuple[str, object]] = {
    "redis_url": ("redis://10.0.0.2:6380/1", "redis://10.0.0.2:6380/1"),
    "redis_cluster": ("true", True),
    "redis_username": ("gateway", "gateway"),
    "redis_password": ("a-password-0123", SecretStr("a-password-0123")),
    "redis_tls_ca": ("/etc/bandwagon/ca.pem", Path("/etc/bandwagon/ca.pem")),
    "telegram_api_url": ("http://127.0.0.1:9999/tg", "http://127.0.0.1:9999/tg"),
    "notify_retry_for_s": ("60", 60.0),
    "config_path": ("/etc/bandwagon/bots.yaml", Path("/etc/bandwagon/bots.yaml")),
    "gateway_host": ("0.0.0.0", "0.0.0.0"),
    "gateway_port": ("9000", 9000),
    "health_port": ("0", 0),
    "health_host": ("0.0.0.0", "0.0.0.0"),
    "gateway_max_message_bytes": ("2048", 2048),
    "gateway_auth_timeout_s": ("2.5", 2.5),
    "gateway_rate_burst": ("5", 5),
    "gateway_rate_per_s": ("1.5", 1.5),
    "gateway_auth_fails_per_min": ("3", 3),
    "gateway_trusted_proxies": ("10.0.0.1", ("10.0.0.1",)),
    "gateway_send_queue": ("8", 8),
    "gateway_send_stall_s": ("4", 4.0),
    "gateway_ping_interval_s": ("30", 30.0),
    "gateway_ping_timeout_s": ("40", 40.0),
    "gateway_drain_s": ("3", 3.0),
    "gateway_allowed_origins": ("https://app.example", ("https://app.example",)),
    "log_level": ("DEBUG", "DEBUG"),
    "worker_id": ("strategy-0", "strategy-0"),
    "lease_ttl_s": ("30", 30.0),
    "source": ("ccxt", "ccxt"),
    "replay": ("ETH-USDT=a.csv", ("ETH-USDT=a.csv",)),
    "speed": ("2.5", 2.5),
    "seed": ("7", 7),
    "stale_periods": ("5", 5.0),
    "ccxt_websocket": ("0", False),
    "ccxt_urls": ('{"binance": {"public": "http://127.0.0.1:1"}}', None),  # None: as given
}


def variable(model: type[BaseSettings], field: str) -> str:
    """pydantic-settings' rule: the alias where there is one, else prefix and name, upper case."""
    alias = model.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    return (model.model_config.get("env_prefix", "") + field).upper()


@pytest.mark.parametrize(("model", "load"), MODELS, ids=lambda item: getattr(item, "__name__", ""))
def test_every_field_is_read_from_the_variable_named_after_it(
    model: type[BaseSettings], load: Loader
) -> None:
    assert set(model.model_fields) <= set(SAMPLES), "a field without a sample in this test"
    for field in model.model_fields:
        raw, expected = SAMPLES[field]
        settings = load({variable(model, field): raw})
        assert getattr(settings, field) == (raw if expected is None else expected), field
        assert settings.model_fields_set == {field}


def test_the_names_are_those_of_spec_and_the_docs() -> None:
    assert variable(Settings, "config_path") == "BANDWAGON_CONFIG"
    assert variable(Settings, "gateway_port") == "GATEWAY_PORT"  # SPEC 4.1 rule 3
    assert variable(Settings, "gateway_drain_s") == "GATEWAY_DRAIN_S"  # SPEC 5.1 rule 7
    assert variable(IngestSettings, "stale_periods") == "BANDWAGON_STALE_PERIODS"
    documented = (REPO / "docs" / "configuration.md").read_text()
    for model, _ in MODELS:
        for field in model.model_fields:
            assert f"`{variable(model, field)}`" in documented, field


@pytest.mark.parametrize(("model", "load"), MODELS, ids=lambda item: getattr(item, "__name__", ""))
def test_an_empty_variable_is_unset(model: type[BaseSettings], load: Loader) -> None:
    settings = load({variable(model, field): "" for field in model.model_fields})
    assert settings.model_fields_set == set()
    assert settings.model_dump(exclude={"worker_id"}) == load({}).model_dump(exclude={"worker_id"})


def test_only_the_upper_case_name_is_the_variable() -> None:
    assert load_settings({"redis_url": "redis://elsewhere:1/0"}).redis_url == Settings().redis_url
    assert load_settings({"config_path": "/x.yaml"}).config_path == Settings().config_path


def test_a_list_variable_is_comma_separated_with_blanks_dropped() -> None:
    settings = load_settings(
        {
            "GATEWAY_TRUSTED_PROXIES": " 10.0.0.1, 10.0.0.0/8 ,, ",
            "GATEWAY_ALLOWED_ORIGINS": "https://a.example,https://b.example",
        }
    )
    assert settings.gateway_trusted_proxies == ("10.0.0.1", "10.0.0.0/8")
    assert settings.gateway_allowed_origins == ("https://a.example", "https://b.example")
    replays = load_ingest_settings({"BANDWAGON_REPLAY": "ETH-USDT=a.csv, b.csv,"}).replay
    assert replays == ("ETH-USDT=a.csv", "b.csv")
    # Given in code, a list is kept as it is (tests build the gateway's settings so).
    assert Settings(gateway_trusted_proxies=("127.0.0.0/8",)).gateway_trusted_proxies == (
        "127.0.0.0/8",
    )


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        (
            {"GATEWAY_PORT": "eighty"},
            "config error: GATEWAY_PORT: eighty: Input should be a valid integer",
        ),
        (
            {"GATEWAY_PORT": "70000"},
            "config error: GATEWAY_PORT: 70000: Input should be less than or equal to 65535",
        ),
        ({"LEASE_TTL_S": "0.5"}, "config error: LEASE_TTL_S: 0.5: Input should be greater"),
        ({"WORKER_ID": "-x"}, "config error: WORKER_ID: -x: String should match pattern"),
        ({"HEALTH_PORT": "any"}, "config error: HEALTH_PORT: any: Input should be"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_its_variable(
    environ: dict[str, str], line: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ)
    assert str(error.value).startswith(line)
    assert error.value.exit_code == 78


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        ({"BANDWAGON_SPEED": "-1"}, "BANDWAGON_SPEED: -1: must be a number >= 0, or max"),
        ({"BANDWAGON_STALE_PERIODS": "0"}, "BANDWAGON_STALE_PERIODS: 0: must be a number of"),
        ({"BANDWAGON_CCXT_WEBSOCKET": "maybe"}, "BANDWAGON_CCXT_WEBSOCKET: maybe: must be 1 or 0"),
    ],
)
def test_a_bad_ingest_value_is_a_config_error_naming_its_variable(
    environ: dict[str, str], line: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_ingest_settings(environ)
    assert str(error.value).startswith(f"config error: {line}")


def test_a_flag_wins_over_its_variable_which_is_then_not_checked() -> None:
    environ = {"BANDWAGON_SEED": "x", "BANDWAGON_SPEED": "nan"}
    settings = load_ingest_settings(environ, {"seed": 3, "speed": "max"})
    assert (settings.seed, settings.speed) == (3, 0.0)
    with pytest.raises(ConfigError) as error:
        load_ingest_settings({"BANDWAGON_STALE_PERIODS": "2"}, {"stale_periods": "-1"})
    assert str(error.value).startswith("config error: --stale-periods: -1: must be a number")


def test_constructing_settings_reads_no_environment_but_load_settings_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9001")
    assert Settings().gateway_port == 8080
    assert load_settings().gateway_port == 9001


def test_the_build_version_is_pyprojects_from_the_package_metadata() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert VERSION == importlib.metadata.version("bandwagon") == pyproject["project"]["version"]
