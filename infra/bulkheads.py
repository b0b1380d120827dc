"""Bulkheads: a cap on the calls in flight to each provider from one process, so a slow or hanging provider
cannot take every worker thread that the others need."""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from infra.breakers import ProviderBlocked
from infra.metrics import call_in_flight


class BulkheadFull(ProviderBlocked):
    """Every slot for the provider is taken in this process: no call was made; try again shortly."""

    def __init__(self, provider: str, retry_after_s: float) -> None:
        super().__init__(provider, retry_after_s, why="calls in flight are at this process's cap")


class Bulkheads:
    """One bounded set of slots per provider; a provider without a limit is not capped."""

    def __init__(self, limits: Mapping[str, int], retry_after_s: float = 1.0, wait_s: float = 0.0,
                 max_waiters: int = 0) -> None:
        self.limits = dict(limits)
        self.retry_after_s = retry_after_s
        self.wait_s = wait_s
        self.max_waiters = max_waiters
        self._slots = {provider: threading.BoundedSemaphore(n) for provider, n in limits.items() if n > 0}
        self._waiters = threading.BoundedSemaphore(max_waiters) if max_waiters > 0 and wait_s > 0 else None

    @contextmanager
    def slot(self, provider: str) -> Iterator[None]:
        """Hold one of the provider's slots for the call; raise BulkheadFull when none frees up within wait_s.

        A wave of steps reaching one provider together (sagas started in a burst move in step) passes after a short
        wait instead of going back to WAITING and through the sweeper; a provider that hangs frees no slot, and
        the steps waiting for one give up after wait_s. At most max_waiters calls of the process wait at once,
        whatever their provider, so the threads held outside the caps are bounded too: a step that finds the
        slots and the waiting places taken gives up at once."""
        slots = self._slots.get(provider)
        if slots is None:
            with call_in_flight(provider):
                yield
            return
        if not slots.acquire(blocking=False) and not self._wait_for(slots):
            raise BulkheadFull(provider, self.retry_after_s)
        try:
            with call_in_flight(provider):
                yield
        finally:
            slots.release()

    def _wait_for(self, slots: threading.BoundedSemaphore) -> bool:
        if self._waiters is None or not self._waiters.acquire(blocking=False):
            return False
        try:
            return slots.acquire(timeout=self.wait_s)
        finally:
            self._waiters.release()
