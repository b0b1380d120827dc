"""Stand-ins for the engine's fast tier: providers that keep ledgers, a clock that moves when told, breakers a test
opens, and a driver that plays broker and beat (runs every published step, sweeps after moving the clock).

The services under test are the real ones (place_order, run_step, sweep, cancel_order) on a real SQLite file.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa

from domain.catalog import SEED_BOOKS
from domain.model import Order, OrderStatus
from infra import repository as repo
from infra.breakers import BreakerState, ProviderBlocked
from infra.providers import PaymentDeclined, ProviderError, ProviderRefused, ProviderReply
from infra.tables import deliveries, notifications, payments, saga_steps
from saga.definition import SagaDefinition
from saga.order_saga import ORDER_SAGA
from services.cancellation import CancelOrder, cancel_order
from services.orders import OrderView, PlaceOrder, place_order
from services.runtime import Runtime
from services.steps import Attempt, claim, perform, run_step
from services.sweeper import SweepReport, sweep
from tests.unit.fakes import RecordingPublisher, make_runtime

Outcome = Literal["ok", "declined", "refused", "transient", "lost"]
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """The runtime's clock: an aware UTC instant that moves only when a test advances it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def advance_to(self, instant: datetime) -> None:
        self.now = max(self.now, instant)


# --- providers -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One effect a provider carried out: its idempotency key, the reference it answered and what was asked."""

    key: str
    reference: str
    fields: dict[str, Any]


def _ledger(operation: str) -> Any:
    """A property: the effects `operation` carried out, in order, one per idempotency key."""
    return property(lambda providers: list(providers.ledgers[operation].values()))


class FakeProviders:
    """Payment, delivery and messaging in one process, idempotent per key like the real ones: a repeated key gets
    the first answer back and adds no ledger entry. Each operation answers "ok" unless a test scripts otherwise:
    declined (PaymentDeclined), refused (ProviderRefused), transient (ProviderError, nothing happened) or lost
    (the effect happens, then ProviderError(uncertain=True))."""

    OPERATIONS = ("charge", "refund", "ship", "cancel", "send")

    def __init__(self) -> None:
        self.payment = FakePaymentClient(self)
        self.delivery = FakeDeliveryClient(self)
        self.messaging = FakeMessagingClient(self)
        self.calls: list[tuple[str, str]] = []  # (operation, idempotency key) of every call, in order
        self.ledgers: dict[str, dict[str, Entry]] = {op: {} for op in self.OPERATIONS}
        self._script: dict[str, list[Outcome]] = {op: [] for op in self.OPERATIONS}
        self._hooks: dict[str, Callable[[], object]] = {}

    def script(self, operation: str, *outcomes: Outcome) -> None:
        """The next calls of `operation` answer these outcomes, in turn; later calls answer "ok"."""
        self._script[operation].extend(outcomes)

    def during(self, operation: str, hook: Callable[[], object]) -> None:
        """Run `hook` inside the next call of `operation`, before the provider acts (a race with the call)."""
        self._hooks[operation] = hook

    def keys(self, operation: str) -> list[str]:
        """The idempotency keys `operation` was called with, one per call."""
        return [key for op, key in self.calls if op == operation]

    charges = _ledger("charge")
    refunds = _ledger("refund")
    shipments = _ledger("ship")
    cancellations = _ledger("cancel")

    @property
    def messages(self) -> list[str]:
        """The text of every message sent, in order."""
        return [entry.fields["text"] for entry in self.ledgers["send"].values()]

    def close(self) -> None:
        for client in (self.payment, self.delivery, self.messaging):
            client.close()

    def handle(self, operation: str, key: str, **fields: Any) -> ProviderReply:
        """One call: the scripted outcome, the effect (once per key) and the answer."""
        self.calls.append((operation, key))
        hook = self._hooks.pop(operation, None)
        if hook is not None:
            hook()
        outcome = self._script[operation].pop(0) if self._script[operation] else "ok"
        _refuse(operation, outcome)
        entry = self.ledgers[operation].setdefault(key, Entry(key, f"{operation}-{len(self.ledgers[operation]) + 1}",
                                                              fields))
        if outcome == "lost":
            raise ProviderError(f"{operation} did not answer: ReadTimeoutError", uncertain=True)
        return ProviderReply(entry.reference, {"id": entry.reference, **entry.fields})


def _refuse(operation: str, outcome: Outcome) -> None:
    """Raise what an outcome that carries nothing out raises."""
    if outcome == "declined":
        raise PaymentDeclined("payment declined: insufficient funds")
    if outcome == "refused":
        raise ProviderRefused(f"{operation} answered 422: refused")
    if outcome == "transient":
        raise ProviderError(f"{operation} answered 503: busy", uncertain=False)


class _FakeClient:
    def __init__(self, world: FakeProviders) -> None:
        self.world = world
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakePaymentClient(_FakeClient):
    def charge(self, key: str, order_id: int, customer_id: int, amount_cents: int) -> ProviderReply:
        return self.world.handle("charge", key, order_id=order_id, customer_id=customer_id,
                                 amount_cents=amount_cents)

    def refund(self, key: str, order_id: int, charge_id: str) -> ProviderReply:
        return self.world.handle("refund", key, order_id=order_id, charge_id=charge_id)


class FakeDeliveryClient(_FakeClient):
    def ship(self, key: str, order_id: int, customer_id: int, book_id: int, qty: int) -> ProviderReply:
        return self.world.handle("ship", key, order_id=order_id, customer_id=customer_id, book_id=book_id, qty=qty)

    def cancel(self, key: str, order_id: int, shipment_id: str) -> ProviderReply:
        return self.world.handle("cancel", key, order_id=order_id, shipment_id=shipment_id)


class FakeMessagingClient(_FakeClient):
    def send(self, key: str, order_id: int, customer_id: int, text: str) -> ProviderReply:
        return self.world.handle("send", key, order_id=order_id, customer_id=customer_id, text=text)


# --- breakers ------------------------------------------------------------------------------------------------------
class FakeBreakers:
    """infra.breakers.Breakers as the services use it (call, state), opened by the test and timed by the fake
    clock. (The real breakers time their reset with the wall clock, so only sleeping would get past one.)"""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._open: dict[str, tuple[datetime | None, float]] = {}  # provider: (open until or None, retry_after_s)
        self.blocked: list[str] = []  # the provider of every call refused while open

    def open(self, provider: str, retry_after_s: float, for_s: float | None = None) -> None:
        """Refuse calls to `provider`, answering retry_after_s (at most the time left), for for_s seconds
        (retry_after_s unless given; math.inf: until closed)."""
        duration = retry_after_s if for_s is None else for_s
        until = None if math.isinf(duration) else self.clock() + timedelta(seconds=duration)
        self._open[provider] = (until, retry_after_s)

    def close(self, provider: str) -> None:
        self._open.pop(provider, None)

    def state(self, provider: str) -> BreakerState:
        until, retry_after_s = self._open.get(provider, (self.clock(), 0.0))
        left = math.inf if until is None else (until - self.clock()).total_seconds()
        if left <= 0:
            return BreakerState("closed", 0.0)
        return BreakerState("open", max(min(retry_after_s, left), 0.5))

    def call(self, provider: str, func: Callable[..., Any], *args: object) -> Any:
        state = self.state(provider)
        if state.name == "open":
            self.blocked.append(provider)
            raise ProviderBlocked(provider, state.retry_after_s)
        return func(*args)


# --- the driver ----------------------------------------------------------------------------------------------------
@dataclass
class Engine:
    """A runtime on fakes, and the broker and beat played by hand: `deliver` runs what was published, `settle`
    also moves the clock to each next due step or expired lease and sweeps, until nothing is left to do."""

    rt: Runtime
    clock: FakeClock
    providers: FakeProviders
    breakers: FakeBreakers
    publisher: RecordingPublisher
    runs: list[tuple[int, str, str]] = field(default_factory=list)  # (saga, step, what run_step answered)
    delivered: int = 0  # how many of publisher.sent have been run

    def place(self, customer_id: int = 7, book_id: int = 1, qty: int = 1, key: str | None = None) -> OrderView:
        return place_order(self.rt, PlaceOrder(customer_id, book_id, qty, key)).view

    def play(self, operation: str | None = None, *outcomes: Outcome) -> OrderView:
        """Place an order while `operation` answers `outcomes` in turn, and settle."""
        if operation is not None:
            self.providers.script(operation, *outcomes)
        placed = self.place()
        self.settle()
        return placed

    def cancel(self, order_id: int, reason: str | None = None) -> OrderView:
        return cancel_order(self.rt, CancelOrder(order_id, reason))

    def deliver(self, count: float = math.inf) -> list[str]:
        """Run the dispatches published and not yet run, including those the runs publish, `count` of them at
        most; their answers."""
        answers: list[str] = []
        while self.delivered < len(self.publisher.sent) and len(answers) < count:
            saga_id, step = self.publisher.sent[self.delivered]
            self.delivered += 1
            answers.append(self.run(saga_id, step))
        return answers

    def run(self, saga_id: int, step: str) -> str:
        answer = run_step(self.rt, saga_id, step, f"task-{len(self.runs) + 1}")
        self.runs.append((saga_id, step, answer))
        return answer

    def sweep(self) -> SweepReport:
        return sweep(self.rt)

    def settle(self, rounds: int = 100) -> None:
        """Deliver, then move the clock to whatever is next due and sweep, until no step is open."""
        self.deliver()
        for _ in range(rounds):
            due = self.next_due()
            if due is None:
                return
            self.clock.advance_to(due)
            self.sweep()
            self.deliver()
        raise AssertionError(f"the engine did not settle in {rounds} sweeps")

    def next_due(self) -> datetime | None:
        """When the sweeper next has something to do: an open step falls due, or a lease runs out."""
        with self.rt.db.reading() as conn:
            due = conn.execute(sa.select(sa.func.min(saga_steps.c.available_at))
                               .where(saga_steps.c.status.in_(repo.OPEN_FOR_CLAIM))).scalar()
            lease = conn.execute(sa.select(sa.func.min(saga_steps.c.lease_until))
                                 .where(saga_steps.c.status == "RUNNING")).scalar()
        times = [] if due is None else [due]
        if lease is not None:
            times.append(lease + timedelta(microseconds=1))  # a lease has expired once now is past it
        return min(times) if times else None

    # --- reading the outcome ---------------------------------------------------------------------------------------
    def order(self, order_id: int) -> Order:
        with self.rt.db.reading() as conn:
            found = repo.get_order(conn, order_id)
        assert found is not None
        return found

    def saga(self, saga_id: int) -> Any:
        with self.rt.db.reading() as conn:
            return repo.saga_row(conn, saga_id)

    def sagas(self, order_id: int) -> list[Any]:
        with self.rt.db.reading() as conn:
            return list(repo.sagas_of_order(conn, order_id))

    def steps(self, saga_id: int) -> dict[str, Any]:
        with self.rt.db.reading() as conn:
            return {row.name: row for row in repo.saga_step_rows(conn, saga_id)}

    def records(self, order_id: int) -> tuple[Any, Any]:
        """The order's payment and delivery records (None where there is none)."""
        with self.rt.db.reading() as conn:
            payment, delivery = (conn.execute(sa.select(table).where(table.c.order_id == order_id)).first()
                                 for table in (payments, deliveries))
        return payment, delivery

    def notifications(self, saga_id: int) -> dict[str, Any]:
        with self.rt.db.reading() as conn:
            rows = conn.execute(sa.select(notifications).where(notifications.c.saga_id == saga_id)).all()
        return {row.step: row for row in rows}

    def runs_of(self, saga_id: int) -> list[str]:
        """The step each run_step call for this saga was asked to run."""
        return [step for saga, step, _ in self.runs if saga == saga_id]


def vanish_after_the_call(engine: Engine, saga_id: int, step: str) -> Attempt:
    """A worker claims the step and makes the provider call, then dies before recording anything."""
    engine.delivered = len(engine.publisher.sent)  # the broker's message is taken by the worker that dies
    attempt = claim(engine.rt, saga_id, step, "doomed")
    assert attempt is not None
    perform(engine.rt, attempt.context, attempt.provider)
    return attempt


# --- what the customer hears ---------------------------------------------------------------------------------------
BOOK = next(b for b in SEED_BOOKS if b.id == 1)  # what Engine.place orders by default, one copy


def told(name: str, order_id: int, definition: SagaDefinition = ORDER_SAGA) -> str:
    """The definition's message `name` as the customer reads it, for one copy of BOOK."""
    amount = f"{BOOK.price_cents // 100}.{BOOK.price_cents % 100:02d}"
    return definition.messages[name].format(order_id=order_id, title=BOOK.title, amount=amount)


def assert_ended(engine: Engine, placed: OrderView, status: OrderStatus, message: str) -> None:
    """The order ended in `status` and its customer heard one message: the order saga's `message`."""
    assert engine.order(placed.order.id).status is status
    assert engine.providers.messages == [told(message, placed.order.id)]


def make_engine(tmp_path: Path, **settings: Any) -> Engine:
    """An Engine on a fresh SQLite file, with settings overridden by name (inline_steps=0...)."""
    return engine_on(make_runtime(tmp_path), **settings)


def engine_on(rt: Runtime, **settings: Any) -> Engine:
    """An Engine on `rt`'s migrated database (SQLite or PostgreSQL), with fakes for the rest."""
    clock = FakeClock()
    providers = FakeProviders()
    breakers = FakeBreakers(clock)
    rt.settings = replace(rt.settings, **settings)
    rt.clock, rt.providers, rt.breakers = clock, providers, breakers  # type: ignore[assignment]
    assert isinstance(rt.publisher, RecordingPublisher)
    return Engine(rt, clock, providers, breakers, rt.publisher)


def engine_fixture(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The body of each test module's `engine` fixture; parametrized indirectly, its param overrides settings
    ({"inline_steps": 0}...)."""
    engine = make_engine(tmp_path, **getattr(request, "param", {}))
    yield engine
    engine.rt.close()


def served(engine: Engine) -> Iterator[str]:
    """The API on the engine, served by werkzeug in a thread on a free port: yields its base URL (the body of a
    `url` fixture for tests that talk HTTP to it: `bookmarket sagas`, the console in a browser)."""
    import threading

    from werkzeug.serving import make_server

    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(engine.rt.settings, runtime=engine.rt), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
