"""What KEDA's redis trigger reads (templates/worker-autoscaler.yaml: LLEN of a list named as SAGA_QUEUE) is where the
real publisher leaves the steps no worker has taken yet, on a real Redis."""
from __future__ import annotations

import uuid

import pytest
import redis

from infra.broker import Publisher, make_celery
from infra.config import Settings
from tests.integration.conftest import forget_queue
from tests.support import REDIS_BASE_URL

pytestmark = pytest.mark.integration


def test_steps_waiting_for_a_worker_are_the_length_of_a_redis_list_named_as_the_saga_queue() -> None:
    settings = Settings.from_env({"REDIS_URL": REDIS_BASE_URL, "SAGA_QUEUE": f"saga-keda-{uuid.uuid4().hex[:8]}"})
    app = make_celery(settings)
    client = redis.Redis.from_url(REDIS_BASE_URL)
    try:
        assert client.llen(settings.queue) == 0
        failed = Publisher(app, settings.queue, timeout_s=2).publish([(1, "pay"), (2, "pay"), (3, "ship")])
        assert failed == []
        assert client.type(settings.queue) == b"list"
        assert client.llen(settings.queue) == 3
        assert not [k for k in client.scan_iter(f"{settings.queue}*") if k != settings.queue.encode()], \
            "a priority sub-queue would hide messages from KEDA's listName"
    finally:
        app.close()
        client.close()
        forget_queue(REDIS_BASE_URL, settings.queue)
