"""The saga's provider calls as a bare Celery chain, the baseline of bench/saga_throughput.py.

`bare.pay | bare.ship | bare.notify`: each task makes the same HTTP call to the sandbox as the saga's step (with
infra.providers' clients) and hands the order on to the next. No database, no saga bookkeeping, no result
backend: the last task writes the finish time into a Redis hash (order id -> epoch seconds), a task that fails
writes into a second hash, and the client never waits on a result.

The Celery configuration is Book Market's own (infra.broker.make_celery: acks_late, prefetch 1, JSON, no
results...), so the difference measured is the saga's bookkeeping, not Celery settings.

Worker: `python -m celery -A bench.bare_chain worker --queues $BARE_QUEUE` with BARE_BROKER_URL, BARE_QUEUE and
PAYMENT_URL / DELIVERY_URL / MESSAGING_URL in the environment (saga_throughput.py starts them).
"""
from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import chain

from infra.broker import make_celery
from infra.config import Settings
from infra.providers import Providers

BROKER_URL = os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/3")
QUEUE = os.environ.get("BARE_QUEUE", "bench-bare")

settings = Settings.from_env({**os.environ, "REDIS_URL": BROKER_URL, "SAGA_QUEUE": QUEUE})
app = make_celery(settings)
app.conf.beat_schedule = {}


class _PerProcess:
    """Provider clients and a Redis connection, made after the fork (one set per prefork child)."""

    def __init__(self) -> None:
        self.pid = -1
        self.providers: Providers | None = None
        self.redis: redis.Redis | None = None

    def get(self) -> tuple[Providers, redis.Redis]:
        if self.pid != os.getpid() or self.providers is None or self.redis is None:
            self.pid = os.getpid()
            self.providers = Providers.from_urls(settings.payment_url, settings.delivery_url, settings.messaging_url,
                                                 settings.provider_timeout_s)
            self.redis = redis.Redis.from_url(BROKER_URL)
        return self.providers, self.redis


_local = _PerProcess()


def _key(order: dict[str, Any], step: str) -> str:
    return f"{order['run']}-{order['order_id']}:{step}"


def _failed(order: dict[str, Any], step: str, exc: Exception) -> None:
    _, r = _local.get()
    r.hset(order["fail_key"], str(order["order_id"]), f"{step}: {type(exc).__name__}: {exc}")


@app.task(name="bare.pay")
def pay(order: dict[str, Any]) -> dict[str, Any]:
    providers, _ = _local.get()
    try:
        providers.payment.charge(_key(order, "pay"), order["order_id"], order["customer_id"], order["amount_cents"])
    except Exception as exc:
        _failed(order, "pay", exc)
        raise
    return order


@app.task(name="bare.ship")
def ship(order: dict[str, Any]) -> dict[str, Any]:
    providers, _ = _local.get()
    try:
        providers.delivery.ship(_key(order, "ship"), order["order_id"], order["customer_id"], order["book_id"],
                                order["qty"])
    except Exception as exc:
        _failed(order, "ship", exc)
        raise
    return order


@app.task(name="bare.notify")
def notify(order: dict[str, Any]) -> dict[str, Any]:
    providers, r = _local.get()
    try:
        providers.messaging.send(_key(order, "notify"), order["order_id"], order["customer_id"],
                                 f"Your order {order['order_id']} has shipped.")
    except Exception as exc:
        _failed(order, "notify", exc)
        raise
    r.hset(order["finish_key"], str(order["order_id"]), repr(time.time()))
    return order


def configure_client(broker_url: str, queue: str) -> None:
    """For the client process: publish to `queue` on `broker_url` (call before the first publish)."""
    app.conf.broker_url = broker_url
    app.conf.task_default_queue = queue


def order_chain(order: dict[str, Any]) -> Any:
    """The chain for one order (the client calls `.apply_async()` on it and never waits)."""
    return chain(pay.s(order), ship.s(), notify.s())
