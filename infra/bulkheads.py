"""Bulkheads: a cap on the calls in flight to each provider from one process, so a slow or hanging provider
cannot take every worker thread that the others need."""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from infra.breakers import ProviderBlocked


class BulkheadFull(ProviderBlocked):
    """Every slot for the provider is taken in this process: no call was made; try again shortly."""

    def __init__(self, provider: str, retry_after_s: float) -> None:
        super().__init__(provider, retry_after_s, why="calls in flight are at this process's cap")


class Bulkheads:
    """One bounded set of slots per provider; a provider without a limit is not capped."""

    def __init__(self, limits: Mapping[str, int], retry_after_s: float = 1.0) -> None:
        self.limits = dict(limits)
        self.retry_after_s = retry_after_s
        self._slots = {provider: threading.BoundedSemaphore(n) for provider, n in limits.items() if n > 0}

    @contextmanager
    def slot(self, provider: str) -> Iterator[None]:
        """Hold one of the provider's slots for the call; raise BulkheadFull at once when none is free."""
        slots = self._slots.get(provider)
        if slots is None:
            yield
            return
        if not slots.acquire(blocking=False):
            raise BulkheadFull(provider, self.retry_after_s)
        try:
            yield
        finally:
            slots.release()
