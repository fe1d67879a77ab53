"""Configuration from environment variables, validated once at start-up (12-factor)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from domain.currencies import is_iso_currency

#: The embedded default: a SQLite file beside the code, so `make run` needs no server.
DEFAULT_DATABASE_URL = f"sqlite:///{Path(__file__).resolve().parent / 'instance' / 'fx.db'}"
DEFAULT_CURRENCIES = "USD,CAD,EUR,GBP,JPY,CHF,AUD"


class ConfigError(ValueError):
    """A setting has a value the application cannot run with."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def normalize_database_url(url: str) -> str:
    """Route every PostgreSQL URL to psycopg 3, whatever scheme the platform hands us."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    #: Empty means the embedded in-process broker (StubBroker plus an in-process worker).
    broker_url: str = ""
    sentry_dsn: str = ""
    sentry_traces_sample_rate: float = 0.1
    environment: str = "development"
    log_level: str = "INFO"
    secret_key: str = "dev-only-not-secret"
    currencies: tuple[str, ...] = tuple(DEFAULT_CURRENCIES.split(","))
    #: Upper bound of one exchange, in units of the source currency.
    max_exchange_amount: Decimal = Decimal("1000000")
    max_request_bytes: int = 16 * 1024
    db_pool_size: int = 10
    db_max_overflow: int = 20
    db_idle_in_transaction_timeout_ms: int = 15_000
    # Relay
    relay_batch_size: int = 500
    relay_poll_interval_seconds: float = 1.0
    relay_retention_hours: int = 72
    relay_max_backoff_seconds: float = 30.0
    relay_coalesce_ms: int = 5
    #: Serve Prometheus metrics on this port from the relay process (0: off).
    relay_metrics_port: int = 0
    #: Serve Dramatiq's Prometheus metrics from worker processes on this port (0: off).
    worker_metrics_port: int = 0
    # Workflow
    bank_url: str = ""
    bank_connect_timeout_seconds: float = 2.0
    bank_read_timeout_seconds: float = 5.0
    step_lease_seconds: float = 30.0
    quote_ttl_seconds: float = 30.0
    credit_max_attempts: int = 5
    fx_rates: str = ""
    # Operations
    #: An open exchange with no progress for this long is stuck: listed, and re-enqueued.
    stuck_after_seconds: float = 120.0
    reconcile_interval_seconds: float = 30.0
    #: "name:password,name2:password2" for the operations pages (HTTP Basic).
    operators: str = ""
    #: Refuse the open local-operator fallback even outside production.
    operator_keys_only: bool = False
    #: Requests per API key (or client address) on the JSON API, Flask-Limiter syntax.
    api_rate_limit: str = "600 per minute"
    #: Where the rate limiter counts: memory:// (per process) or redis://... (shared).
    rate_limit_storage_url: str = "memory://"
    # Dramatiq. Its defaults return a killed worker's messages after 6.5 to 28 minutes
    # on this machine (shared/README.md); these bring that to about 15-20 s.
    queue_name: str = "exchanges"
    #: Per-actor Dramatiq retries: how often, and the backoff between tries.
    step_max_retries: int = 20
    step_min_backoff_ms: int = 1_000
    step_max_backoff_ms: int = 300_000
    #: Dramatiq's TimeLimit per step: a hung step is interrupted and retried.
    step_time_limit_ms: int = 60_000
    broker_heartbeat_timeout_ms: int = 15_000
    broker_maintenance_chance: int = 100_000

    def __post_init__(self) -> None:
        bank_call = self.bank_connect_timeout_seconds + self.bank_read_timeout_seconds
        if self.step_lease_seconds <= bank_call:
            raise ConfigError(
                f"STEP_LEASE_SECONDS ({self.step_lease_seconds}) must exceed the bank's connect + read "
                f"timeouts ({bank_call}): a lease that ends mid-call lets a second worker in"
            )
        if self.credit_max_attempts > self.step_max_retries + 1:
            raise ConfigError("CREDIT_MAX_ATTEMPTS must not exceed STEP_MAX_RETRIES + 1")

    def engine_options(self) -> dict[str, int]:
        return {
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_max_overflow,
            "idle_in_transaction_timeout_ms": self.db_idle_in_transaction_timeout_ms,
        }

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = normalize_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        broker_url = env.get("BROKER_URL") or env.get("REDIS_URL") or ""
        if broker_url and not broker_url.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
            raise ConfigError(f"BROKER_URL must be a redis:// or amqp:// URL, got {broker_url!r}")
        currencies = tuple(
            c.strip().upper() for c in (env.get("CURRENCIES") or DEFAULT_CURRENCIES).split(",") if c.strip()
        )
        unknown = [c for c in currencies if not is_iso_currency(c)]
        if unknown or len(currencies) < 2:
            raise ConfigError(f"CURRENCIES must list at least two ISO 4217 codes; not ISO: {unknown}")
        try:
            max_amount = Decimal(env.get("MAX_EXCHANGE_AMOUNT") or "1000000")
        except InvalidOperation:
            raise ConfigError("MAX_EXCHANGE_AMOUNT must be a decimal number") from None
        if not max_amount.is_finite() or max_amount <= 0:
            raise ConfigError("MAX_EXCHANGE_AMOUNT must be positive")
        environment = env.get("APP_ENV") or "development"
        secret_key = env.get("SECRET_KEY") or cls.secret_key
        if environment == "production" and secret_key == cls.secret_key:
            raise ConfigError("SECRET_KEY must be set in production")
        return cls(
            database_url=database_url,
            broker_url=broker_url,
            sentry_dsn=env.get("SENTRY_DSN") or "",
            sentry_traces_sample_rate=_float(env, "SENTRY_TRACES_SAMPLE_RATE", 0.1),
            environment=environment,
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            secret_key=secret_key,
            currencies=currencies,
            max_exchange_amount=max_amount,
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", 16 * 1024, minimum=256),
            db_pool_size=_int(env, "DB_POOL_SIZE", 10, minimum=1),
            db_max_overflow=_int(env, "DB_MAX_OVERFLOW", 20),
            db_idle_in_transaction_timeout_ms=_int(env, "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 15_000, minimum=100),
            relay_batch_size=_int(env, "RELAY_BATCH_SIZE", 500, minimum=1),
            relay_poll_interval_seconds=_float(env, "RELAY_POLL_INTERVAL_SECONDS", 1.0, minimum=0.01),
            relay_retention_hours=_int(env, "RELAY_RETENTION_HOURS", 72, minimum=1),
            relay_max_backoff_seconds=_float(env, "RELAY_MAX_BACKOFF_SECONDS", 30.0, minimum=0.1),
            relay_coalesce_ms=_int(env, "RELAY_COALESCE_MS", 5),
            relay_metrics_port=_int(env, "RELAY_METRICS_PORT", 0),
            worker_metrics_port=_int(env, "WORKER_METRICS_PORT", 0),
            queue_name=env.get("QUEUE_NAME") or "exchanges",
            bank_url=env.get("BANK_URL") or "",
            stuck_after_seconds=_float(env, "STUCK_AFTER_SECONDS", 120.0, minimum=1.0),
            reconcile_interval_seconds=_float(env, "RECONCILE_INTERVAL_SECONDS", 30.0, minimum=0.1),
            operators=env.get("OPERATORS") or "",
            operator_keys_only=(env.get("OPERATOR_KEYS_ONLY") or "").lower() in {"1", "true", "yes"},
            api_rate_limit=env.get("API_RATE_LIMIT") or "600 per minute",
            rate_limit_storage_url=env.get("RATE_LIMIT_STORAGE_URL") or "memory://",
            bank_connect_timeout_seconds=_float(env, "BANK_CONNECT_TIMEOUT_SECONDS", 2.0, minimum=0.05),
            bank_read_timeout_seconds=_float(env, "BANK_READ_TIMEOUT_SECONDS", 5.0, minimum=0.05),
            step_lease_seconds=_float(env, "STEP_LEASE_SECONDS", 30.0, minimum=0.5),
            quote_ttl_seconds=_float(env, "QUOTE_TTL_SECONDS", 30.0, minimum=1.0),
            credit_max_attempts=_int(env, "CREDIT_MAX_ATTEMPTS", 5, minimum=1),
            fx_rates=env.get("FX_RATES") or "",
            step_max_retries=_int(env, "STEP_MAX_RETRIES", 20),
            step_min_backoff_ms=_int(env, "STEP_MIN_BACKOFF_MS", 1_000, minimum=1),
            step_max_backoff_ms=_int(env, "STEP_MAX_BACKOFF_MS", 300_000, minimum=1),
            step_time_limit_ms=_int(env, "STEP_TIME_LIMIT_MS", 60_000, minimum=100),
            broker_heartbeat_timeout_ms=_int(env, "BROKER_HEARTBEAT_TIMEOUT_MS", 15_000, minimum=1000),
            broker_maintenance_chance=_int(env, "BROKER_MAINTENANCE_CHANCE", 100_000, minimum=1),
        )
