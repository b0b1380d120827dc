"""Admission control: turn new orders away, briefly and cleanly, when payment cannot keep up."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from domain.errors import Overloaded
from infra import repository as repo
from saga.order_saga import ORDER_SAGA, PAYMENT
from services.runtime import Runtime

CHECK_EVERY_S = 0.25  # one look at the breaker and the backlog per process per quarter second
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
    limit = rt.settings.admission_max_waiting_payments
    with rt.db.reading() as conn:
        waiting = repo.count_open_steps(conn, PAYMENT_STEP, limit + 1)
    if waiting > limit:
        return Verdict(False, rt.settings.admission_retry_after_s, f"over {limit} orders are waiting for payment")
    return Verdict(True)
