"""Admission control: turn new orders away, briefly and cleanly, when payment cannot keep up.

The backlog allowed follows what the stack finishes: an order is admitted while the sagas waiting to pay (their
payment step open: queued, waiting or in flight) are fewer than ADMISSION_MAX_WAIT_S seconds of the payments
finished over the last RATE_WINDOW_S, and never refused below ADMISSION_MAX_WAITING_PAYMENTS (the floor that lets
a cold or idle stack fill its workers before any rate is known). More workers finish more payments a second, so
the same setting lets more orders in; a payment provider that slows down lets fewer in."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from domain.errors import Overloaded
from infra import repository as repo
from saga.order_saga import ORDER_SAGA, PAYMENT
from services.runtime import Runtime

CHECK_EVERY_S = 0.25  # one look at the breaker and the backlog per process per quarter second
RATE_WINDOW_S = 10.0  # payments finished over this window make the current rate
PAYMENT_STEP = next(s.name for s in ORDER_SAGA.steps if s.provider == PAYMENT)  # the order saga's charge


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    retry_after_s: float = 0.0
    reason: str = ""


class Admission:
    """Caches its verdict briefly so a burst of POSTs costs one backlog count, not one each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verdict = Verdict(True)
        self._checked_at = float("-inf")

    def check(self, rt: Runtime) -> None:
        """Raise Overloaded while the payment breaker is open or too many sagas wait to pay."""
        verdict = self._current(rt)
        if not verdict.admitted:
            raise Overloaded(verdict.reason, verdict.retry_after_s)

    def _current(self, rt: Runtime) -> Verdict:
        now = time.monotonic()
        with self._lock:
            if now - self._checked_at < CHECK_EVERY_S:
                return self._verdict
            self._checked_at = now
        verdict = judge(rt)
        with self._lock:
            self._verdict = verdict
        return verdict


def judge(rt: Runtime) -> Verdict:
    if rt.breakers is not None:
        state = rt.breakers.state(PAYMENT)
        if state.name == "open":
            return Verdict(False, state.retry_after_s, "payment is unavailable right now")
    settings = rt.settings
    with rt.db.reading() as conn:
        finished = repo.count_finished_steps(conn, PAYMENT_STEP, rt.clock() - timedelta(seconds=RATE_WINDOW_S))
        limit = allowed_backlog(finished / RATE_WINDOW_S, settings.admission_max_wait_s,
                                settings.admission_max_waiting_payments)
        waiting = repo.count_open_steps(conn, PAYMENT_STEP, limit + 1)
    if waiting > limit:
        return Verdict(False, settings.admission_retry_after_s,
                       f"over {limit} orders are waiting for payment (about {settings.admission_max_wait_s:g}s of "
                       f"work at {finished / RATE_WINDOW_S:.0f} payments/s)")
    return Verdict(True)


def allowed_backlog(payments_per_s: float, max_wait_s: float, floor: int) -> int:
    """Orders that may wait for payment: max_wait_s seconds of the current payment rate, at least floor."""
    return max(floor, int(payments_per_s * max_wait_s))
