"""INLINE_STEPS: one task runs a saga's provider steps back to back, or each step is its own task."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import build_stack

pytestmark = pytest.mark.integration
PROVIDER_STEPS = ("pay", "ship", "notify")


@pytest.mark.parametrize(("inline", "tasks"), [("4", 1), ("1", 2), ("0", 3)])
def test_inline_steps_sets_how_many_tasks_carry_an_order(tmp_path: Path, postgres_server: str, redis_server: str,
                                                          inline: str, tasks: int) -> None:
    with build_stack(tmp_path, "postgresql", postgres_server, INLINE_STEPS=inline) as live:
        order = live.post_order(customer_id=70).get_json()
        saga = live.wait_saga(order["saga_id"])

        steps = live.steps(saga)
        assert saga["status"] == "COMPLETED" and live.order(order["id"])["status"] == "SHIPPED"
        assert all(steps[name]["status"] == "SUCCEEDED" and steps[name]["attempts"] == 1 for name in steps)
        assert len({steps[name]["task_id"] for name in PROVIDER_STEPS}) == tasks
        assert all(steps[name]["task_id"] for name in PROVIDER_STEPS)
        for provider in ("payment", "delivery", "messaging"):
            assert len(live.sandbox.ledger(provider, order["id"])) == 1
