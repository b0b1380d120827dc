"""BROKER_URL: Redis (empty: REDIS_URL) or RabbitMQ, and what changes with it: the transport options, the queue's
type, the metrics' queue depth. No broker is reached (the integration tier runs both for real)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from infra.broker import broker_url, is_amqp, make_celery
from infra.config import Settings
from tests.support import free_port
from tests.unit.engine_fakes import Engine, engine_fixture
from tests.unit.test_metrics import open_client, scrape, shared_breakers, value

AMQP = "amqp://shop:secret@rabbitmq:5672/shop"


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    yield from engine_fixture(tmp_path, request)


def test_an_empty_broker_url_is_the_redis_of_redis_url_with_its_visibility_timeout() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://cache:6379/2", "STEP_LEASE_S": "100"})
    app = make_celery(settings)
    assert broker_url(settings) == app.conf.broker_url == "redis://cache:6379/2"
    assert app.conf.broker_transport_options["visibility_timeout"] == 400
    assert app.amqp.queues[settings.queue].queue_arguments is None


def test_a_redis_channel_keeps_one_publishing_client_per_pool_and_leaves_the_consuming_one_to_kombu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("redis.Redis.ping", lambda *_: True)  # a new channel pings its Redis: none is reached here
    app = make_celery(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0"}))
    with app.connection_for_write() as conn:
        channel = conn.channel()
        first = channel._create_client()
        assert channel._create_client() is first  # every publish and ack: the same client, not a new one each
        assert first.connection_pool is channel.pool
        assert channel._create_client(asynchronous=True) is not channel._create_client(asynchronous=True)
        channel._pool = None  # kombu drops its pool (a reconnect): the next client is over the new pool
        renewed = channel._create_client()
        assert renewed is not first and renewed.connection_pool is channel.pool
        assert conn.channel()._create_client() is not renewed  # each channel has its own


def test_an_amqp_broker_url_gives_a_quorum_queue_on_a_topic_exchange_with_publisher_confirms() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://cache:6379/2", "BROKER_URL": AMQP, "SAGA_QUEUE": "orders"})
    app = make_celery(settings)
    assert is_amqp(broker_url(settings)) and app.conf.broker_url == AMQP
    queue = app.amqp.queues["orders"]
    assert queue.queue_arguments == {"x-queue-type": "quorum"} and queue.durable
    assert queue.exchange.type == "topic"  # native delayed delivery routes through topic exchanges only
    assert app.amqp.queues["payments"].queue_arguments == {"x-queue-type": "quorum"}  # a queue made on demand too
    # nothing Redis-only (such as visibility_timeout); socket reads and writes bounded by PUBLISH_TIMEOUT_S / 4
    assert app.conf.broker_transport_options == {"confirm_publish": True, "read_timeout": 0.5, "write_timeout": 0.5,
                                                 "max_retries": 1, "interval_start": 0}
    assert app.conf.task_acks_late and app.conf.worker_detect_quorum_queues
    assert settings.redis_url == "redis://cache:6379/2"  # breakers and rate limits stay in Redis


def test_a_broker_url_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="BROKER_URL"):
        Settings.from_env({"BROKER_URL": "kafka://broker:9092"})


def test_on_rabbitmq_the_queue_depth_comes_from_the_broker_and_its_failure_leaves_the_redis_gauges(
    engine: Engine,
) -> None:
    unreachable = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    engine.rt.settings = replace(engine.rt.settings, broker_url=unreachable, readiness_timeout_s=0.5)
    redis_client = fakeredis.FakeRedis()
    redis_client.rpush(engine.rt.settings.queue, b"not", b"the", b"queue")  # a Redis list is not RabbitMQ's depth
    engine.rt.breakers = shared_breakers(redis_client)

    samples = scrape(open_client(engine.rt))
    assert value(samples, "bookmarket_scrape_error", source="broker") == 1
    assert value(samples, "bookmarket_scrape_error", source="redis") == 0
    assert value(samples, "bookmarket_breaker_state", provider="payment") == 0
    assert not [k for k, _ in samples if k == "bookmarket_queue_depth"]
