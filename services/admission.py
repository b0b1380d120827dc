"""Admission control: turn new orders away, briefly and cleanly, when payment cannot keep up.

The backlog allowed follows what the stack finishes: an order is admitted while the sagas waiting to pay (their
payment step open: queued, waiting or in flight) are fewer than ADMISSION_MAX_WAIT_S seconds of the payments
finished over the last RATE_WINDOW_S, and never refused below ADMISSION_MAX_WAITING_PAYMENTS (the floor that lets
a cold or idle stack fill its workers before any rate is known). More workers finish more payments a second, so
the same setting lets more orders in; a payment provider that slows down lets fewer in.

And the answers stay fast: each API process times the orders it accepts (the insert transaction and the publish,
which slow down when the database, Redis or the CPU are saturated) and lets orders in at a rate it adapts, AIMD
style: every ADJUST_EVERY_S, if the slowest tenth of them took longer than ADMISSION_TARGET_MS, the rate is cut
by a quarter; otherwise it grows by a tenth. Orders over the rate get a fast 503 with Retry-After, which costs a
fraction of an accepted order, so the stack does not trade every client's latency for a few more orders a second
when it is saturated (the benchmark's clients share its two cores with it)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from domain.errors import Overloaded
from infra import metrics
from infra import repository as repo
from saga.order_saga import ORDER_SAGA, PAYMENT
from services.runtime import Runtime

CHECK_EVERY_S = 0.25  # one look at the breaker and the backlog per process per quarter second
RATE_WINDOW_S = 10.0  # payments finished over this window make the current rate
ADJUST_EVERY_S = 0.5  # how often the accept rate is adjusted to the answer times seen
MIN_RATE = 2.0  # orders a second an API process always lets in, so it keeps timing some
MAX_RATE = 10_000.0  # the rate an idle process starts at: no limit in practice
MIN_SAMPLES = 8  # orders in a window (16 a second) before slow answers may cut the rate
PAYMENT_STEP = next(s.name for s in ORDER_SAGA.steps if s.provider == PAYMENT)  # the order saga's charge


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    retry_after_s: float = 0.0
    reason: str = ""
    code: str = ""  # the reason's label in bookmarket_admission_refusals_total


class Admission:
    """Caches its verdict briefly so a burst of POSTs costs one backlog count, not one each."""

    def __init__(self, target_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._verdict = Verdict(True)
        self._checked_at = float("-inf")
        self.pace = Pace(target_s, clock) if target_s > 0 else None

    def check(self, rt: Runtime) -> None:
        """Raise Overloaded while the payment breaker is open, too many sagas wait to pay, or orders come in faster
        than this process answers them within its target."""
        verdict = self._current(rt)
        if not verdict.admitted:
            metrics.admission_refused(verdict.code)
            raise Overloaded(verdict.reason, verdict.retry_after_s)
        if self.pace is not None and not self.pace.take():
            metrics.admission_refused("pace")
            raise Overloaded("orders are coming in faster than they can be answered quickly",
                             rt.settings.admission_retry_after_s)

    def accepted(self, seconds: float) -> None:
        """An order was accepted; placing it took `seconds`."""
        if self.pace is not None:
            self.pace.observe(seconds)

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
            return Verdict(False, state.retry_after_s, "payment is unavailable right now", "breaker_open")
    settings = rt.settings
    with rt.db.reading() as conn:
        finished = repo.count_finished_steps(conn, PAYMENT_STEP, rt.clock() - timedelta(seconds=RATE_WINDOW_S))
        limit = allowed_backlog(finished / RATE_WINDOW_S, settings.admission_max_wait_s,
                                settings.admission_max_waiting_payments)
        waiting = repo.count_open_steps(conn, PAYMENT_STEP, limit + 1)
    if waiting > limit:
        return Verdict(False, settings.admission_retry_after_s,
                       f"over {limit} orders are waiting for payment (about {settings.admission_max_wait_s:g}s of "
                       f"work at {finished / RATE_WINDOW_S:.0f} payments/s)", "backlog")
    return Verdict(True)


class Pace:
    """An adaptive accept rate (AIMD) with a token bucket of a quarter second's worth of orders."""

    def __init__(self, target_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.target_s = target_s
        self.clock = clock
        self.rate = MAX_RATE
        self._lock = threading.Lock()
        self._tokens = 1.0
        self._filled_at = clock()
        self._window_from = clock()
        self._seen: list[float] = []

    def take(self) -> bool:
        """One order may come in now (a token is spent) or not."""
        with self._lock:
            now = self.clock()
            self._adjust(now)
            burst = max(1.0, self.rate / 4)
            self._tokens = min(burst, self._tokens + (now - self._filled_at) * self.rate)
            self._filled_at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._seen.append(seconds)

    def _adjust(self, now: float) -> None:
        if now - self._window_from < ADJUST_EVERY_S:
            return
        seen, self._seen, self._window_from = sorted(self._seen), [], now
        if not seen:
            return
        slow = seen[int(len(seen) * 0.9)]  # the slowest tenth begins here
        # a few slow answers from a process that is hardly busy (a database hiccup, a loaded machine) say nothing
        # about overload: only a window of at least MIN_SAMPLES orders can cut the rate
        if slow > self.target_s and len(seen) >= MIN_SAMPLES:
            # cut from what was really let in (a rate far above the arrivals would take many cuts to bite)
            self.rate = max(MIN_RATE, min(self.rate, len(seen) / ADJUST_EVERY_S) * 0.75)
        else:
            self.rate = min(MAX_RATE, self.rate * 1.1 + 1)


def allowed_backlog(payments_per_s: float, max_wait_s: float, floor: int) -> int:
    """Orders that may wait for payment: max_wait_s seconds of the current payment rate, at least floor."""
    return max(floor, int(payments_per_s * max_wait_s))
