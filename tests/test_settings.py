"""Settings from the environment: each read once, validated at start-up, a bad one named in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from errors import ConfigError, FxError
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FLASK = str(Path(sys.executable).parent / "flask")


def test_an_empty_environment_gives_the_declared_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_each_variable_is_parsed_by_the_type_of_its_field() -> None:
    settings = Settings.from_env({"DB_POOL_SIZE": "3", "STEP_LEASE_SECONDS": "12.5", "OPERATOR_KEYS_ONLY": "yes",
                                  "MAX_EXCHANGE_AMOUNT": "500.25", "CURRENCIES": "usd, cad", "LOG_LEVEL": "debug",
                                  "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert (settings.db_pool_size, settings.step_lease_seconds, settings.operator_keys_only) == (3, 12.5, True)
    assert settings.max_exchange_amount == Decimal("500.25")
    assert (settings.currencies, settings.log_level) == (("USD", "CAD"), "DEBUG")
    assert settings.broker_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(("env", "message"), [
    ({"DB_POOL_SIZE": "many"}, "DB_POOL_SIZE must be a whole number, got 'many'"),
    ({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE must be at least 1, got 0"),
    ({"DB_CONNECT_TIMEOUT_SECONDS": "0"}, "DB_CONNECT_TIMEOUT_SECONDS must be at least 1, got 0"),
    ({"DB_TCP_USER_TIMEOUT_MS": "-1"}, "DB_TCP_USER_TIMEOUT_MS must be at least 0, got -1"),
    ({"DB_TCP_USER_TIMEOUT_MS": "10s"}, "DB_TCP_USER_TIMEOUT_MS must be a whole number, got '10s'"),
    ({"RELAY_POLL_INTERVAL_SECONDS": "soon"}, "RELAY_POLL_INTERVAL_SECONDS must be a number, got 'soon'"),
    ({"MAX_EXCHANGE_AMOUNT": "lots"}, "MAX_EXCHANGE_AMOUNT must be a decimal number, got 'lots'"),
    ({"MAX_EXCHANGE_AMOUNT": "-5"}, "MAX_EXCHANGE_AMOUNT must be positive"),
    ({"CURRENCIES": "USD,XXY"}, "CURRENCIES must list at least two ISO 4217 codes"),
    ({"BROKER_URL": "http://broker"}, "BROKER_URL must be a redis:// or amqp:// URL"),
    ({"BROKER_QUEUE_TYPE": "mirrored"}, "BROKER_QUEUE_TYPE must be quorum or classic, got 'mirrored'"),
    ({"APP_ENV": "production"}, "SECRET_KEY must be set in production"),
    ({"STEP_LEASE_SECONDS": "5"}, "STEP_LEASE_SECONDS (5.0) must exceed the bank's connect + read timeouts"),
])
def test_a_bad_variable_is_refused_with_a_config_error_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, FxError)


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BROKER_URL", "REDIS_URL"}}
    return subprocess.run(command, cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.process
@pytest.mark.parametrize("command", [
    [FLASK, "--app", "app", "relay", "status"],
    [sys.executable, "-c", "import jobs.worker"],
], ids=["flask-cli", "dramatiq-worker-module"])
def test_a_process_started_with_a_bad_setting_exits_2_with_one_line(command: list[str]) -> None:
    result = _run(command, DB_POOL_SIZE="many")
    assert result.returncode == 2
    expected = "configuration error: DB_POOL_SIZE must be a whole number, got 'many'"
    assert result.stderr.strip().splitlines() == [expected]
    assert result.stdout == ""


def test_behind_a_transaction_pooler_the_engine_settings_say_so_and_listen_goes_direct() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgres://app@pgbouncer:6432/fx", "DB_TRANSACTION_POOLER": "1",
                                  "DATABASE_DIRECT_URL": "postgres://app@primary:5432/fx"})
    assert settings.engine_options()["transaction_pooler"] is True
    assert settings.database_direct_url == "postgresql+psycopg://app@primary:5432/fx"
    assert Settings.from_env({}).engine_options()["transaction_pooler"] is False


def test_the_database_network_timeouts_are_read_and_handed_to_the_engine() -> None:
    assert (Settings().db_connect_timeout_seconds, Settings().db_tcp_user_timeout_ms) == (5, 10_000)
    settings = Settings.from_env({"DB_CONNECT_TIMEOUT_SECONDS": "2", "DB_TCP_USER_TIMEOUT_MS": "0"})
    assert (settings.db_connect_timeout_seconds, settings.db_tcp_user_timeout_ms) == (2, 0)
    assert settings.engine_options()["connect_timeout_seconds"] == 2
    assert settings.engine_options()["tcp_user_timeout_ms"] == 0
