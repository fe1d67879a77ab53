"""Configuration from environment variables, validated once at start-up (12-factor).

Each field is declared once, with its default and, where it comes from the environment,
the variable's name and its lower bound (`_env`); `Settings.from_env` reads them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from domain.currencies import is_iso_currency
from domain.egress import IPNetwork, parse_networks
from errors import ConfigError

#: The embedded default: a SQLite file beside the code, so `make run` needs no server.
DEFAULT_DATABASE_URL = f"sqlite:///{Path(__file__).resolve().parent / 'instance' / 'fx.db'}"
DEFAULT_CURRENCIES = ("USD", "CAD", "EUR", "GBP", "JPY", "CHF", "AUD")
BROKER_SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://")


def _env(name: str, default: Any, minimum: float | None = None) -> Any:
    """A field read from the environment variable `name` (parsed by the field's type)."""
    return field(default=default, metadata={"env": name, "minimum": minimum})


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
    sentry_dsn: str = _env("SENTRY_DSN", "")
    sentry_traces_sample_rate: float = _env("SENTRY_TRACES_SAMPLE_RATE", 0.1, 0.0)
    environment: str = _env("APP_ENV", "development")
    log_level: str = _env("LOG_LEVEL", "INFO")
    secret_key: str = _env("SECRET_KEY", "dev-only-not-secret")
    currencies: tuple[str, ...] = DEFAULT_CURRENCIES
    #: Upper bound of one exchange, in units of the source currency.
    max_exchange_amount: Decimal = _env("MAX_EXCHANGE_AMOUNT", Decimal("1000000"))
    max_request_bytes: int = _env("MAX_REQUEST_BYTES", 16 * 1024, 256)
    db_pool_size: int = _env("DB_POOL_SIZE", 10, 1)
    db_max_overflow: int = _env("DB_MAX_OVERFLOW", 20, 0)
    #: PostgreSQL aborts a transaction left idle this long. No transaction here waits on
    #: anything but the database, so only a frozen process (SIGSTOP, GC pause, VM freeze)
    #: trips it, and its row locks are then released for the worker that takes over.
    db_idle_in_transaction_timeout_ms: int = _env("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 15_000, 100)
    #: DATABASE_URL is a pooler in transaction mode (PgBouncer): no server-side prepared statements,
    #: no startup options (set the timeout above on the database, or PgBouncer's idle_transaction_timeout).
    db_transaction_pooler: bool = _env("DB_TRANSACTION_POOLER", False)
    #: Connecting to the database gives up after this long (libpq's connect_timeout)...
    db_connect_timeout_seconds: int = _env("DB_CONNECT_TIMEOUT_SECONDS", 5, 1)
    #: ...and an open connection whose peer falls silent is dropped after about this long (TCP_USER_TIMEOUT,
    #: with keepalives to match); 0: the OS defaults, which wait out ~15 minutes of retransmissions.
    db_tcp_user_timeout_ms: int = _env("DB_TCP_USER_TIMEOUT_MS", 10_000, 0)
    #: PostgreSQL itself, for what a transaction pooler cannot carry: the relay's LISTEN. Empty: DATABASE_URL.
    database_direct_url: str = ""
    # Relay
    relay_batch_size: int = _env("RELAY_BATCH_SIZE", 500, 1)
    relay_poll_interval_seconds: float = _env("RELAY_POLL_INTERVAL_SECONDS", 1.0, 0.01)
    relay_retention_hours: int = _env("RELAY_RETENTION_HOURS", 72, 1)
    relay_max_backoff_seconds: float = _env("RELAY_MAX_BACKOFF_SECONDS", 30.0, 0.1)
    relay_coalesce_ms: int = _env("RELAY_COALESCE_MS", 5, 0)
    #: One relay publishes at a time; a standby takes over this long after the active one stops renewing.
    relay_lease_seconds: float = _env("RELAY_LEASE_SECONDS", 10.0, 0.5)
    #: Serve Prometheus metrics on this port from the relay process (0: off).
    relay_metrics_port: int = _env("RELAY_METRICS_PORT", 0, 0)
    #: Serve Dramatiq's Prometheus metrics from worker processes on this port (0: off).
    worker_metrics_port: int = _env("WORKER_METRICS_PORT", 0, 0)
    # Workflow
    #: Empty: the in-process bank (embedded) or DEFAULT_BANK_URL (the Procfile's `bank:`).
    bank_url: str = _env("BANK_URL", "")
    bank_connect_timeout_seconds: float = _env("BANK_CONNECT_TIMEOUT_SECONDS", 2.0, 0.05)
    bank_read_timeout_seconds: float = _env("BANK_READ_TIMEOUT_SECONDS", 5.0, 0.05)
    step_lease_seconds: float = _env("STEP_LEASE_SECONDS", 30.0, 0.5)
    quote_ttl_seconds: float = _env("QUOTE_TTL_SECONDS", 30.0, 1.0)
    #: How long a customer's quote (POST /api/quotes) is firm: time to read it and confirm.
    firm_quote_ttl_seconds: float = _env("FIRM_QUOTE_TTL_SECONDS", 120.0, 1.0)
    credit_max_attempts: int = _env("CREDIT_MAX_ATTEMPTS", 5, 1)
    fx_rates: str = _env("FX_RATES", "")
    # Operations
    #: An open exchange with no progress for this long is stuck: listed, and re-enqueued.
    stuck_after_seconds: float = _env("STUCK_AFTER_SECONDS", 120.0, 1.0)
    reconcile_interval_seconds: float = _env("RECONCILE_INTERVAL_SECONDS", 30.0, 0.1)
    #: How often a reconciler pass judges every settled exchange rather than what changed since the last.
    reconcile_full_interval_seconds: float = _env("RECONCILE_FULL_INTERVAL_SECONDS", 86_400.0, 1.0)
    #: Workers, relays and reconcilers write a heartbeat this often...
    heartbeat_interval_seconds: float = _env("HEARTBEAT_INTERVAL_SECONDS", 5.0, 0.1)
    #: ...and count as dead once their last one is older than this.
    process_dead_after_seconds: float = _env("PROCESS_DEAD_AFTER_SECONDS", 15.0, 0.5)
    #: "name:password,name2:password2" for the operations pages (HTTP Basic).
    operators: str = _env("OPERATORS", "")
    #: Refuse the open local-operator fallback even outside production.
    operator_keys_only: bool = _env("OPERATOR_KEYS_ONLY", False)
    #: Requests per verified API key on the JSON API (`limits` syntax: "600 per minute").
    api_rate_limit: str = _env("API_RATE_LIMIT", "600 per minute")
    #: Requests without a valid key (none, unknown, revoked), per client address: past it, 429 before any lookup.
    unverified_rate_limit: str = _env("UNVERIFIED_RATE_LIMIT", "20 per minute")
    #: Failed sign-ins (portal password, operators' Basic auth) before the account, or the address, is locked.
    login_limit_per_account: str = _env("LOGIN_LIMIT_PER_ACCOUNT", "5 per 15 minutes")
    login_limit_per_address: str = _env("LOGIN_LIMIT_PER_ADDRESS", "30 per 15 minutes")
    #: How long a page's form stays valid (its CSRF token's age limit).
    csrf_time_limit_seconds: float = _env("CSRF_TIME_LIMIT_SECONDS", 3600.0, 1.0)
    #: Where the rate limiter counts: memory:// (per process) or redis://... (shared).
    rate_limit_storage_url: str = _env("RATE_LIMIT_STORAGE_URL", "memory://")
    # Dramatiq. Its defaults return a killed worker's messages after 6.5 to 28 minutes
    # on this machine (shared/README.md); these bring that to about 15-20 s.
    queue_name: str = _env("QUEUE_NAME", "exchanges")
    #: Per-actor Dramatiq retries: how often, and the backoff between tries.
    step_max_retries: int = _env("STEP_MAX_RETRIES", 20, 0)
    step_min_backoff_ms: int = _env("STEP_MIN_BACKOFF_MS", 1_000, 1)
    step_max_backoff_ms: int = _env("STEP_MAX_BACKOFF_MS", 300_000, 1)
    #: Dramatiq's TimeLimit per step: a hung step is interrupted and retried.
    step_time_limit_ms: int = _env("STEP_TIME_LIMIT_MS", 60_000, 100)
    broker_heartbeat_timeout_ms: int = _env("BROKER_HEARTBEAT_TIMEOUT_MS", 15_000, 1000)
    broker_maintenance_chance: int = _env("BROKER_MAINTENANCE_CHANCE", 100_000, 1)
    # Webhooks
    #: Seconds between delivery attempts after the first (Standard Webhooks' schedule: 27.6 h in all).
    webhook_retry_schedule: str = _env("WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000")
    webhook_timeout_seconds: float = _env("WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1)
    #: CIDR blocks, comma-separated, that webhooks may reach besides public addresses (a private
    #: deployment's receivers; the tests' 127.0.0.1). Empty: public addresses only.
    webhook_allowed_networks: str = _env("WEBHOOK_ALLOWED_NETWORKS", "")
    #: Live webhook endpoints per customer: each one is a delivery per event.
    webhook_max_endpoints: int = _env("WEBHOOK_MAX_ENDPOINTS", 10, 1)
    #: Redis only: each enqueue wakes the queue's idle consumers (infra/waking_redis.py);
    #: off, a consumer finds a message at its next poll, as Dramatiq's own does.
    broker_wakeups: bool = _env("BROKER_WAKEUPS", True)
    #: RabbitMQ only: quorum (replicated over the cluster, jobs/quorum_rabbitmq.py) or classic queues.
    broker_queue_type: str = _env("BROKER_QUEUE_TYPE", "quorum")
    #: The web sends an exchange's first message to the broker itself, straight after its commit
    #: (outbox/direct.py); the relay sends it only if it is still untaken after the grace.
    outbox_direct_send: bool = _env("OUTBOX_DIRECT_SEND", True)
    outbox_direct_grace_seconds: float = _env("OUTBOX_DIRECT_GRACE_SECONDS", 30.0, 1.0)

    @property
    def webhook_schedule(self) -> tuple[float, ...]:
        """WEBHOOK_RETRY_SCHEDULE as seconds; ConfigError unless each is a positive number."""
        try:
            delays = tuple(float(part) for part in self.webhook_retry_schedule.split(",") if part.strip())
        except ValueError:
            delays = ()
        if not delays or any(d <= 0 for d in delays):
            raise ConfigError(f"WEBHOOK_RETRY_SCHEDULE={self.webhook_retry_schedule!r}: expected positive "
                              "seconds separated by commas, e.g. 5,300,1800")
        return delays

    @property
    def webhook_networks(self) -> tuple[IPNetwork, ...]:
        """WEBHOOK_ALLOWED_NETWORKS parsed (domain/egress.py); ConfigError naming a bad block."""
        try:
            return parse_networks(self.webhook_allowed_networks)
        except ValueError as error:
            raise ConfigError(f"WEBHOOK_ALLOWED_NETWORKS: {error}") from None

    def __post_init__(self) -> None:
        self.webhook_schedule  # noqa: B018 -- refuse a bad schedule at start, not at the first failure
        self.webhook_networks  # noqa: B018 -- and a bad network list
        if not self.database_url.startswith(("postgresql", "postgres://", "sqlite://")):
            raise ConfigError(f"DATABASE_URL={self.database_url.split('@')[-1][:60]!r} is not a database URL this "
                              "app runs on: use postgresql://user@host:5432/db or sqlite:///path/fx.db")
        bank_call = self.bank_connect_timeout_seconds + self.bank_read_timeout_seconds
        if self.step_lease_seconds <= bank_call:
            raise ConfigError(
                f"STEP_LEASE_SECONDS ({self.step_lease_seconds}) must exceed the bank's connect + read "
                f"timeouts ({bank_call}): a lease that ends mid-call lets a second worker in"
            )
        if self.credit_max_attempts > self.step_max_retries + 1:
            raise ConfigError("CREDIT_MAX_ATTEMPTS must not exceed STEP_MAX_RETRIES + 1")
        if self.process_dead_after_seconds <= self.heartbeat_interval_seconds:
            raise ConfigError("PROCESS_DEAD_AFTER_SECONDS must exceed HEARTBEAT_INTERVAL_SECONDS: "
                              "a live process would look dead between two beats")
        if self.broker_queue_type not in ("quorum", "classic"):
            raise ConfigError(f"BROKER_QUEUE_TYPE must be quorum or classic, got {self.broker_queue_type!r}")
        if not self.max_exchange_amount.is_finite() or self.max_exchange_amount <= 0:
            raise ConfigError("MAX_EXCHANGE_AMOUNT must be positive")

    def engine_options(self) -> dict[str, Any]:
        return {
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_max_overflow,
            "idle_in_transaction_timeout_ms": self.db_idle_in_transaction_timeout_ms,
            "transaction_pooler": self.db_transaction_pooler,
            "connect_timeout_seconds": self.db_connect_timeout_seconds,
            "tcp_user_timeout_ms": self.db_tcp_user_timeout_ms,
        }

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives; ConfigError names the first bad variable."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            raw = env.get(name) if name else None
            if raw:  # unset or empty: the default
                values[f.name] = _parse(name, raw, type(f.default), f.metadata["minimum"])
        values["log_level"] = values.get("log_level", cls.log_level).upper()
        values["database_url"] = normalize_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        values["database_direct_url"] = normalize_database_url(env.get("DATABASE_DIRECT_URL") or "")
        values["broker_url"] = env.get("BROKER_URL") or env.get("REDIS_URL") or ""
        if values["broker_url"] and not values["broker_url"].startswith(BROKER_SCHEMES):
            raise ConfigError(f"BROKER_URL must be a redis:// or amqp:// URL, got {values['broker_url']!r}")
        if env.get("CURRENCIES"):
            values["currencies"] = _currencies(env["CURRENCIES"])
        settings = cls(**values)
        # Only from the environment: a test may build production settings by hand.
        if settings.environment == "production" and settings.secret_key == cls.secret_key:
            raise ConfigError("SECRET_KEY must be set in production")
        return settings


def _parse(name: str, raw: str, kind: type, minimum: float | None) -> Any:
    if kind is bool:
        return raw.lower() in {"1", "true", "yes"}
    if kind is str:
        return raw
    try:
        value = kind(raw)
    except (ValueError, InvalidOperation):
        expected = {int: "a whole number", float: "a number", Decimal: "a decimal number"}[kind]
        raise ConfigError(f"{name} must be {expected}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _currencies(raw: str) -> tuple[str, ...]:
    currencies = tuple(c.strip().upper() for c in raw.split(",") if c.strip())
    unknown = [c for c in currencies if not is_iso_currency(c)]
    if unknown or len(currencies) < 2:
        raise ConfigError(f"CURRENCIES must list at least two ISO 4217 codes; not ISO: {unknown}")
    return currencies
