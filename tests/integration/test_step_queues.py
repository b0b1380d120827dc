"""STEP_QUEUES with two worker groups, as two machines would run them: one started by `bookmarket worker` with
WORKER_QUEUES naming the payment queue only, the other consuming SAGA_QUEUE only; an order ships, each step run by
the group of its queue, and /metrics shows each queue's depth."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import build_stack, forget_queue
from tests.support import ProcessHandle, spawn, wait_until

pytestmark = pytest.mark.integration


def steps_run(log: Path) -> set[str]:
    text = log.read_text(errors="replace")
    return {step for step in ("pay", "ship", "notify") if f"step {step} attempt 1: StepSucceeded" in text}


def test_a_payment_group_and_a_group_for_the_rest_carry_an_order_to_shipped(tmp_path: Path, postgres_server: str,
                                                                             redis_server: str) -> None:
    payment_queue = f"saga-test-payment-{uuid.uuid4().hex[:8]}"
    with build_stack(tmp_path, "postgresql", postgres_server, STEP_QUEUES=f"payment={payment_queue}") as live:
        # build_stack's worker consumes SAGA_QUEUE only: the group for the rest. The payment group is another
        # process tree with its own settings, started by the product's command.
        log = tmp_path / "payments.log"
        proc = spawn([sys.executable, "-m", "cli.main", "worker", "--threads", "8"],
                     {**live.env, "WORKER_QUEUES": payment_queue,
                      "WORKER_HEARTBEAT_FILE": str(tmp_path / "payments.heartbeat")}, log)
        payments = ProcessHandle(proc, log=log)
        try:
            wait_until(lambda: proc.poll() is not None or "ready." in log.read_text(errors="replace"), 60, 0.1,
                       "the payment worker to be ready")
            assert proc.poll() is None, payments.log_tail()

            order = live.post_order(customer_id=71).get_json()
            saga = live.wait_saga(order["saga_id"])

            assert saga["status"] == "COMPLETED" and live.order(order["id"])["status"] == "SHIPPED"
            assert steps_run(log) == {"pay"}
            assert steps_run(tmp_path / "worker.log") == {"ship", "notify"}
            metrics = live.client.get("/metrics").get_data(as_text=True)
            assert f'bookmarket_queue_depth{{queue="{payment_queue}"}} 0.0' in metrics
            assert f'bookmarket_queue_depth{{queue="{live.env["SAGA_QUEUE"]}"}} 0.0' in metrics
        finally:
            payments.stop()
            forget_queue(live.env["REDIS_URL"], payment_queue)
