"""One circuit breaker per provider, its state shared by every process through Redis (pybreaker)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import pybreaker
import redis

from infra.providers import ProviderRefused

log = logging.getLogger(__name__)
T = TypeVar("T")


class ProviderBlocked(Exception):
    """The provider's breaker is open: no call was made; try again after retry_after_s."""

    def __init__(self, provider: str, retry_after_s: float) -> None:
        super().__init__(f"{provider} circuit open; retry in {retry_after_s:.1f}s")
        self.provider = provider
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BreakerPolicy:
    fail_max: int = 5
    reset_s: float = 10.0


@dataclass(frozen=True)
class BreakerState:
    name: str  # closed, open, half-open
    retry_after_s: float


class Breakers:
    """Breakers keyed by provider name. Business refusals (a declined card) never count as failures.

    When Redis cannot be reached the breakers fail open (calls go through), as pybreaker's Redis storage does.
    """

    def __init__(self, client: redis.Redis, policies: Mapping[str, BreakerPolicy], namespace: str) -> None:
        self.client = client
        self.policies = dict(policies)
        self.namespace = namespace
        self._breakers: dict[str, tuple[pybreaker.CircuitBreaker, pybreaker.CircuitRedisStorage]] = {}

    def call(self, provider: str, func: Callable[..., T], *args: object) -> T:
        """Call func through the provider's breaker; raise ProviderBlocked instead of calling when open."""
        pair = self._breaker(provider)
        if pair is None:
            return func(*args)
        try:
            return pair[0].call(func, *args)
        except pybreaker.CircuitBreakerError:
            raise ProviderBlocked(provider, self._retry_after(*pair)) from None

    def state(self, provider: str) -> BreakerState:
        pair = self._breaker(provider)
        if pair is None:
            return BreakerState(pybreaker.STATE_CLOSED, 0.0)
        try:
            name = pair[0].current_state
        except redis.RedisError:
            return BreakerState(pybreaker.STATE_CLOSED, 0.0)
        return BreakerState(name, self._retry_after(*pair) if name == pybreaker.STATE_OPEN else 0.0)

    def _breaker(self, provider: str) -> tuple[pybreaker.CircuitBreaker, pybreaker.CircuitRedisStorage] | None:
        if provider not in self._breakers:
            policy = self.policies.get(provider, BreakerPolicy())
            try:
                storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, self.client,
                                                        namespace=f"{self.namespace}:{provider}")
            except redis.RedisError:
                log.warning("redis unreachable: %s breaker fails open for now", provider)
                return None
            breaker = pybreaker.CircuitBreaker(
                fail_max=policy.fail_max, reset_timeout=policy.reset_s, exclude=[ProviderRefused],
                state_storage=storage, name=provider,
            )
            self._breakers[provider] = (breaker, storage)
        return self._breakers[provider]

    @staticmethod
    def _retry_after(breaker: pybreaker.CircuitBreaker, storage: pybreaker.CircuitRedisStorage) -> float:
        """Seconds until the open breaker lets a trial call through."""
        opened_at = storage.opened_at
        if opened_at is None:
            return float(breaker.reset_timeout)
        elapsed = time.time() - opened_at.timestamp()
        return max(float(breaker.reset_timeout) - elapsed, 0.5)
