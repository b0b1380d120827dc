"""Property: the real engine — claim, perform, record, the executor, the sweeper and cancel_order, on SQLite —
driven through random interleavings of provider answers, duplicate and lost deliveries, cancels, breaker waits that
outlast a step's longest wait, and lease expiries, ends every saga (or parks it for a person) and keeps the books:
no step open in an ended saga, compensations in reverse order, attempts within limits, every charge made for an
undone order refunded once, nothing undone that was not done.

Nothing here re-implements the engine: the script only decides when messages arrive, what providers answer and
when time passes (an injected clock; nothing sleeps).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from domain.errors import InvalidTransition, SagaNeedsSupport
from infra.providers import PaymentDeclined, ProviderError, ProviderRefused, ProviderReply
from infra.tables import notifications, orders, saga_steps, sagas
from services.cancellation import CancelOrder, cancel_order
from services.orders import PlaceOrder, place_order
from services.runtime import Runtime
from services.steps import Attempt, claim, perform, publish, record
from services.sweeper import sweep
from tests.unit.engine_fakes import FakeBreakers, FakeClock
from tests.unit.fakes import RecordingPublisher, make_runtime

BLOCKED_FOR_S = 250.0  # three waits outlast a step's longest wait (600 s)
OPEN = ("PENDING", "RUNNING", "WAITING")


@dataclass
class ScriptedProviders:
    """Payment, delivery and messaging in one, whose next answer (whatever the operation) the script sets; unlike
    engine_fakes.FakeProviders, scripted per operation, this lets a random script pick the answer of the call in
    flight. Like a real provider, a key that took effect replays its first answer."""

    answer: str = "ok"
    effects: dict[str, str] = field(default_factory=dict)  # idempotency key -> reference
    history: list[tuple[str, int]] = field(default_factory=list)  # (operation, order) in the order they took effect

    @property
    def payment(self) -> ScriptedProviders:
        return self

    delivery = messaging = payment

    def charge(self, key: str, order_id: int, *_: object) -> ProviderReply:
        return self._call("charge", key, order_id)

    def refund(self, key: str, order_id: int, *_: object) -> ProviderReply:
        return self._call("refund", key, order_id)

    def ship(self, key: str, order_id: int, *_: object) -> ProviderReply:
        return self._call("ship", key, order_id)

    def cancel(self, key: str, order_id: int, *_: object) -> ProviderReply:
        return self._call("cancel", key, order_id)

    def send(self, key: str, order_id: int, *_: object) -> ProviderReply:
        return self._call("send", key, order_id)

    def close(self) -> None:
        pass

    def _call(self, operation: str, key: str, order_id: int) -> ProviderReply:
        if key in self.effects:
            return ProviderReply(self.effects[key], {})
        if self.answer == "transient":
            raise ProviderError(f"{operation}: 503", uncertain=False)
        if self.answer == "permanent":
            raise PaymentDeclined("declined") if operation == "charge" else ProviderRefused(f"{operation} refused")
        self.effects[key] = f"{operation}_{len(self.effects) + 1}"
        self.history.append((operation, order_id))
        if self.answer == "lost":
            raise ProviderError(f"{operation}: answer lost", uncertain=True)
        return ProviderReply(self.effects[key], {})


@dataclass
class Engine:
    rt: Runtime
    clock: FakeClock
    providers: ScriptedProviders
    breakers: FakeBreakers
    publisher: RecordingPublisher
    order_id: int = 0
    in_flight: list[Attempt] = field(default_factory=list)

    def place(self) -> None:
        self.providers.answer = "ok"
        self.publisher.sent.clear()
        self.in_flight.clear()
        self.order_id = int(place_order(self.rt, PlaceOrder(customer_id=7, book_id=1, qty=1)).order.id or 0)

    def deliver(self, index: int, duplicate: bool) -> None:
        queue = self.publisher.sent
        if not queue:
            return
        saga_id, step = queue[index % len(queue)] if duplicate else queue.pop(index % len(queue))
        attempt = claim(self.rt, saga_id, step, None)
        if attempt is not None:
            self.in_flight.append(attempt)

    def finish(self, answer: str) -> None:
        if not self.in_flight:
            return
        attempt = self.in_flight.pop(0)
        self.providers.answer = answer
        if answer == "blocked":
            self.breakers.open(attempt.provider, BLOCKED_FOR_S)
        event, reply = perform(self.rt, attempt.context, attempt.provider)
        self.breakers.close(attempt.provider)
        dispatches, follow = record(self.rt, attempt, event, reply, inline=True)
        publish(self.rt, dispatches)
        if follow is not None:
            self.in_flight.append(follow)

    def cancel(self) -> None:
        try:
            cancel_order(self.rt, CancelOrder(self.order_id, "changed my mind"))
        except (SagaNeedsSupport, InvalidTransition):
            pass  # parked for support, or rejected: nothing to cancel

    def wait(self, seconds: float) -> None:
        """Time passes and the sweeper runs: due retries are sent, expired leases taken back."""
        self.clock.advance(seconds)
        sweep(self.rt)

    def drain(self) -> None:
        """Heal: every message arrives, every provider answers, time passes until nothing is left to do."""
        self.providers.answer = "ok"
        for _ in range(400):
            if self.in_flight:
                self.finish("ok")
            elif self.publisher.sent:
                self.deliver(0, duplicate=False)
            elif self._open_steps():
                self.wait(self.rt.settings.step_lease_s + 1)
            else:
                return

    def _open_steps(self) -> int:
        with self.rt.db.reading() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(saga_steps.join(sagas)).where(
                sagas.c.order_id == self.order_id, saga_steps.c.status.in_(OPEN))).scalar_one())


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    publisher = RecordingPublisher()
    rt = make_runtime(Path(tmp_path_factory.mktemp("engine")), publisher)
    clock, providers = FakeClock(), ScriptedProviders()
    breakers = FakeBreakers(clock)
    rt.clock, rt.providers, rt.breakers = clock, providers, breakers  # type: ignore[assignment]
    yield Engine(rt, clock, providers, breakers, publisher)
    rt.db.dispose()


ANSWERS = ["ok", "ok", "ok", "transient", "permanent", "blocked", "lost"]
actions = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("finish"), st.sampled_from(ANSWERS)),
        st.tuples(st.just("cancel")),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 31.0, 300.0])),
    ),
    max_size=50,
)


@settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(script=actions)
@example(script=[("deliver", 0, False), ("finish", "blocked"), ("wait", 300.0), ("deliver", 0, False),
                 ("finish", "blocked"), ("wait", 300.0), ("deliver", 0, False), ("finish", "blocked")])
@example(script=[("deliver", 0, False), ("cancel",), ("finish", "blocked")])
@example(script=[("deliver", 0, False), ("wait", 31.0), ("deliver", 0, False), ("finish", "ok"), ("cancel",)])
@example(script=[("deliver", 0, False), ("finish", "lost"), ("cancel",), ("wait", 31.0), ("deliver", 0, False),
                 ("finish", "permanent")])
def test_every_interleaving_ends_every_saga_and_keeps_the_books(engine: Engine, script: list[tuple[Any, ...]]) -> None:
    engine.place()
    for action in script:
        getattr(engine, action[0])(*action[1:])
    engine.drain()
    check_invariants(engine)


def check_invariants(engine: Engine) -> None:
    with engine.rt.db.reading() as conn:
        order = conn.execute(sa.select(orders).where(orders.c.id == engine.order_id)).one()
        runs = conn.execute(sa.select(sagas).where(sagas.c.order_id == engine.order_id).order_by(sagas.c.id)).all()
        steps = {r.id: {s.name: s for s in conn.execute(sa.select(saga_steps).where(saga_steps.c.saga_id == r.id))}
                 for r in runs}
        told = {n.step: n.status for n in conn.execute(
            sa.select(notifications).where(notifications.c.order_id == engine.order_id))}
    done = [op for op, order_id in engine.providers.history if order_id == engine.order_id]
    for run in runs:
        assert run.status in ("COMPLETED", "COMPENSATED", "FAILED"), (run, steps[run.id])
        for step in steps[run.id].values():
            assert step.status not in OPEN, (run.status, step)
            assert step.attempts <= step.max_attempts, step
        if run.status == "FAILED":
            assert run.reason and order.reason and "parked for support" in order.reason
    check_money(done, order.status, [r.status for r in runs], told)


def check_money(done: list[str], order_status: str, statuses: list[str], told: dict[str, str]) -> None:
    """What the providers did for the order, against how its sagas ended."""
    assert done.count("charge") <= 1 and done.count("ship") <= 1
    assert "refund" not in done or "charge" in done  # never undo what was not done
    assert "cancel" not in done or "ship" in done
    if "refund" in done and "cancel" in done:
        assert done.index("cancel") < done.index("refund")  # undone in reverse order
    if "FAILED" in statuses:
        return  # parked: a person decides
    undone = statuses[0] == "COMPENSATED" or len(statuses) > 1
    if undone:
        assert ("refund" in done) == ("charge" in done) and ("cancel" in done) == ("ship" in done)
        assert order_status in ("REJECTED", "CANCELLED")
        ending = "notify_outcome" if statuses[0] == "COMPENSATED" else "notify_cancelled"
        assert told.get(ending) in ("SENT", "FAILED"), told  # the customer is told how it ended (best effort)
        return
    assert statuses == ["COMPLETED"] and order_status == "SHIPPED"
    assert done.count("charge") == done.count("ship") == 1 and "refund" not in done
    assert told.get("notify") in ("SENT", "FAILED"), told
