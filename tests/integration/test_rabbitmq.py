"""RabbitMQ as the broker (BROKER_URL=amqp): the saga and cancel tests of the Redis stack run again on it, with real
worker processes (tests/integration/test_crash_safety.py kills a worker on both brokers); its queue is a quorum queue,
its publishes are confirmed, a publish it cannot take is handed back within PUBLISH_TIMEOUT_S, and /metrics reads its
queue depth."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from kombu import Connection

from infra.broker import Publisher, make_celery, queue_depth
from infra.config import Settings
from tests.integration import test_cancellation as cancels
from tests.integration import test_order_saga as sagas
from tests.integration.conftest import Stack, build_stack, delete_rabbitmq_queue
from tests.support import RABBITMQ_URL, rabbitmq_vhost

pytestmark = pytest.mark.integration


def test_posted_order_reaches_shipped_with_one_effect_each(rabbitmq_live: Stack) -> None:
    sagas.test_posted_order_reaches_shipped_with_every_step_succeeded_and_one_effect_each(rabbitmq_live)


def test_a_step_message_delivered_twice_changes_nothing(rabbitmq_live: Stack) -> None:
    sagas.test_a_step_task_delivered_twice_changes_nothing(rabbitmq_live)


def test_messaging_down_notify_is_retried_through_the_sweeper_and_succeeds(rabbitmq_live: Stack) -> None:
    sagas.test_messaging_down_notify_is_retried_and_succeeds_once_it_is_back(rabbitmq_live)


def test_cancel_racing_a_charge_in_flight_compensates(rabbitmq_live: Stack) -> None:
    cancels.test_cancel_racing_a_step_in_flight_compensates_at_the_step_boundary(rabbitmq_live, "payment", "pay")


def test_cancel_during_a_retry_backoff_compensates_at_once(rabbitmq_live: Stack) -> None:
    cancels.test_cancel_during_a_retry_backoff_compensates_at_once(rabbitmq_live)


def test_the_step_queue_is_a_durable_quorum_queue_and_the_breakers_stay_in_redis(rabbitmq_live: Stack) -> None:
    queue = rabbitmq_live.settings.queue
    assert rabbitmq_live.env["BROKER_URL"].rsplit("/", 1)[1].startswith("bm-test-")  # its own vhost
    with Connection(rabbitmq_live.env["BROKER_URL"], connect_timeout=3) as conn:
        # declaring it again with other arguments is refused: the worker declared exactly this one
        conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False,
                                           arguments={"x-queue-type": "quorum"})
    runtime = rabbitmq_live.client.application.extensions["bookmarket"]
    assert runtime.publisher.app.conf.broker_url.startswith("amqp://")
    assert runtime.breakers is not None
    assert runtime.breakers.client.connection_pool.connection_kwargs["port"] == 6379


def test_metrics_and_readiness_read_rabbitmq(rabbitmq_live: Stack) -> None:
    page = rabbitmq_live.client.get("/metrics").get_data(as_text=True)
    queue = rabbitmq_live.settings.queue
    assert f'bookmarket_queue_depth{{queue="{queue}"}} 0.0' in page
    assert 'bookmarket_scrape_error{source="broker"} 0.0' in page
    assert 'bookmarket_scrape_error{source="redis"} 0.0' in page
    ready = rabbitmq_live.client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()


def test_metrics_report_the_messages_waiting_in_the_rabbitmq_queue(rabbitmq_server: str) -> None:
    settings = _settings(f"saga-depth-{uuid.uuid4().hex[:8]}")
    app = make_celery(settings)
    try:
        assert queue_depth(RABBITMQ_URL, settings.queue, 2) == 0  # not declared yet
        assert Publisher(app, settings.queue, timeout_s=2).publish([(1, "pay"), (2, "pay"), (3, "ship")]) == []
        assert queue_depth(RABBITMQ_URL, settings.queue, 2) == 3
    finally:
        app.close()
        delete_rabbitmq_queue(RABBITMQ_URL, settings.queue)


def test_a_publish_to_an_unreachable_rabbitmq_is_handed_back_within_the_publish_timeout(rabbitmq_server: str) -> None:
    settings = _settings("saga-nowhere", url="amqp://guest:guest@127.0.0.1:9//", PUBLISH_TIMEOUT_S="1")
    app = make_celery(settings)
    try:
        started = time.monotonic()
        failed = Publisher(app, settings.queue, timeout_s=1).publish([(7, "pay"), (8, "ship")])
        took = time.monotonic() - started
    finally:
        app.close()
    assert failed == [(7, "pay"), (8, "ship")]
    assert took < 1.5, took  # refused at once: one try, no retry policy's reconnect loop


def test_a_publish_the_broker_refuses_is_handed_back_through_the_publisher_confirm(rabbitmq_server: str) -> None:
    """A quorum queue limited to one message that rejects the overflow: the broker nacks what does not fit, and the
    publisher confirm reports it (and what followed it) as unsent (without confirms it would be lost silently)."""
    queue = f"saga-full-{uuid.uuid4().hex[:8]}"
    app = make_celery(_settings(queue))
    app.amqp.queues[queue].queue_arguments.update({"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        assert Publisher(app, queue, timeout_s=2).publish([(1, "pay")]) == []
        more = [(2, "pay"), (3, "pay"), (4, "pay")]
        failed = Publisher(app, queue, timeout_s=2).publish(more)
        # a quorum queue applies its length limit a message late at times: the overflow may start one later
        assert failed and failed == more[len(more) - len(failed):], failed
        assert queue_depth(RABBITMQ_URL, queue, 2) == 1 + len(more) - len(failed) <= 2
    finally:
        app.close()
        delete_rabbitmq_queue(RABBITMQ_URL, queue)


def test_a_publish_to_a_frozen_rabbitmq_is_handed_back_within_the_publish_timeout(rabbitmq_server: str) -> None:
    """RabbitMQ stops answering on a connection already open (a frozen node, a network partition): the publisher
    confirm never comes, and the publish is handed back after PUBLISH_TIMEOUT_S and the close of the dead connection
    (each of its two waits a quarter of it) instead of hanging the API call."""
    proxy = FreezingProxy(5672)
    queue = f"saga-frozen-{uuid.uuid4().hex[:8]}"
    app = make_celery(_settings(queue, url=f"amqp://guest:guest@127.0.0.1:{proxy.port}//", PUBLISH_TIMEOUT_S="1"))
    try:
        assert Publisher(app, queue, timeout_s=1).publish([(1, "pay")]) == []  # the pooled connection is up
        proxy.frozen = True
        started = time.monotonic()
        failed = Publisher(app, queue, timeout_s=1).publish([(2, "pay"), (3, "ship")])
        took = time.monotonic() - started
        assert failed == [(2, "pay"), (3, "ship")]
        assert took < 2, took  # 1.5 x PUBLISH_TIMEOUT_S, and some room
    finally:
        proxy.close()
        with contextlib.suppress(Exception):
            app.close()
        delete_rabbitmq_queue(RABBITMQ_URL, queue)
    assert queue_depth(RABBITMQ_URL, queue, 2) == 0  # deleted; the frozen publish may or may not have landed


def test_orders_posted_while_rabbitmq_is_unreachable_are_accepted_and_dispatched_by_the_sweeper_after(
    tmp_path: Path, postgres_server: str, redis_server: str, rabbitmq_server: str,
) -> None:
    """RabbitMQ goes away (every connection cut, new ones refused) under the API and the worker: orders are still
    accepted at once, their first step waits in the database, and the sweeper sends it once the broker is back."""
    proxy = FreezingProxy(5672)
    try:
        with rabbitmq_vhost() as direct, build_stack(tmp_path, "postgresql", postgres_server, broker="rabbitmq",
                                                     BROKER_URL=direct.replace(":5672/", f":{proxy.port}/")) as live:
            before = [live.post_order(customer_id=47).get_json() for _ in range(2)]
            for order in before:
                assert live.wait_saga(order["saga_id"])["status"] == "COMPLETED"

            proxy.cut()
            during = live.post_orders_without_broker(3, customer_id=47)

            proxy.restore()
            for order in during:
                saga = live.wait_saga(order["saga_id"], timeout=90)
                assert saga["status"] == "COMPLETED", saga
                assert len(live.sandbox.ledger("payment", order["id"], "charge")) == 1
    finally:
        proxy.close()


class FreezingProxy:
    """A TCP proxy to 127.0.0.1:`target` that, once `frozen`, keeps its connections open and forwards nothing;
    `cut` closes every connection and refuses new ones until `restore` (on the same port)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.frozen = False
        self.sockets: list[socket.socket] = []
        self.port = 0
        self.restore()

    def restore(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self.server.getsockname()[1]
        self.sockets.append(self.server)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def cut(self) -> None:
        self.close()
        self.sockets = []

    def _accept(self, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.sockets += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self.frozen:
                    sink.sendall(data)

    def close(self) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


def _settings(queue: str, url: str = RABBITMQ_URL, **env: str) -> Settings:
    return Settings.from_env({"BROKER_URL": url, "SAGA_QUEUE": queue, "REDIS_URL": "redis://127.0.0.1:6379/0", **env})
