"""One circuit breaker per provider, its state shared by every process through Redis (pybreaker)."""
from __future__ import annotations

import functools
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

    def __init__(self, provider: str, retry_after_s: float, why: str = "circuit open") -> None:
        super().__init__(f"{provider} {why}; retry in {retry_after_s:.1f}s")
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


class SharedBreakerStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage that spares the round trips of the common case: a closed breaker.

    pybreaker reads the state from Redis before every call and writes the failure counter back to zero after
    every success: two round trips per provider call. Here a closed state and the failure counter are read
    together (one MGET) at most every `ttl_s` per process, and a success writes the counter only when it is not
    known to be zero already. An open or half-open state is never cached, and every failure still goes to Redis
    at once (INCR), so breakers open as before; another process sees a change of state within `ttl_s`.
    """

    def __init__(self, state: str, redis_object: redis.Redis, namespace: str, ttl_s: float) -> None:
        super().__init__(state, redis_object, namespace=namespace)
        self.ttl_s = ttl_s
        self._read_at = float("-inf")
        self._state = pybreaker.STATE_CLOSED
        self._counter = 0

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < self.ttl_s:
            return
        try:
            state, counter = self._redis.mget(self._namespace("state"), self._namespace("fail_counter"))
            if state is None:  # the keys are gone (Redis restarted empty): start again closed
                self._initialize_redis_state(pybreaker.STATE_CLOSED)
        except redis.RedisError:  # fail open, and do not wait on Redis again before ttl_s
            log.warning("redis unreachable: breaker state falls back to closed")
            self._state, self._counter, self._read_at = pybreaker.STATE_CLOSED, 0, time.monotonic()
            return
        self._state = pybreaker.STATE_CLOSED if state is None else (
            state.decode() if isinstance(state, bytes) else str(state))
        self._counter = int(counter or 0)
        self._read_at = time.monotonic() if self._state == pybreaker.STATE_CLOSED else float("-inf")

    @property
    def state(self) -> str:
        self._refresh()
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        pybreaker.CircuitRedisStorage.state.fset(self, state)  # type: ignore[attr-defined]
        self._state, self._read_at = str(state), float("-inf")

    def increment_counter(self) -> None:
        try:
            self._counter = int(self._redis.incr(self._namespace("fail_counter")))
        except redis.RedisError:
            log.warning("redis unreachable: a failure was not counted")

    def reset_counter(self) -> None:
        if self._counter == 0 and time.monotonic() - self._read_at < self.ttl_s:
            return
        super().reset_counter()
        self._counter = 0

    @property
    def counter(self) -> int:
        self._counter = super().counter
        return self._counter


class Breakers:
    """Breakers keyed by provider name. Business refusals (a declined card) never count as failures.

    When Redis cannot be reached the breakers fail open (calls go through), as pybreaker's Redis storage does.
    """

    def __init__(self, client: redis.Redis, policies: Mapping[str, BreakerPolicy], namespace: str,
                 state_ttl_s: float = 0.25) -> None:
        self.client = client
        self.policies = dict(policies)
        self.namespace = namespace
        self.state_ttl_s = state_ttl_s
        self._breakers: dict[str, tuple[pybreaker.CircuitBreaker, pybreaker.CircuitRedisStorage]] = {}

    def call(self, provider: str, func: Callable[..., T], *args: object) -> T:
        """Call func unless the provider's breaker is open (then raise ProviderBlocked), and count its outcome.

        pybreaker's own `CircuitBreaker.call` holds the breaker's lock for the whole call: one call at a time per
        provider per process. Here the lock is held only to read the state before the call and to count the
        outcome after it, so calls to one provider run side by side. While half-open, every call that starts
        before the first trial ends is a trial too."""
        pair = self._breaker(provider)
        if pair is None:
            return func(*args)
        breaker, storage = pair
        self._admit(provider, breaker, storage)
        try:
            result = func(*args)
        except Exception as exc:
            _count(breaker, functools.partial(breaker.state._handle_error, exc, reraise=False))
            raise
        _count(breaker, breaker.state._handle_success)
        return result

    def _admit(self, provider: str, breaker: pybreaker.CircuitBreaker,
               storage: pybreaker.CircuitRedisStorage) -> None:
        """Raise ProviderBlocked while the breaker is open; once its reset time has passed, half-open it."""
        with breaker._lock:
            try:
                if breaker.state.name != pybreaker.STATE_OPEN:
                    return
                retry_after = self._retry_after(breaker, storage, floor=0.0)
                if retry_after > 0:
                    raise ProviderBlocked(provider, max(retry_after, 0.5))
                breaker.half_open()
            except redis.RedisError:
                log.warning("redis unreachable: %s breaker lets the call through", provider)

    def state(self, provider: str) -> BreakerState:
        pair = self._breaker(provider)
        if pair is None:
            return BreakerState(pybreaker.STATE_CLOSED, 0.0)
        try:
            name = pair[0].current_state
        except redis.RedisError:
            return BreakerState(pybreaker.STATE_CLOSED, 0.0)
        return BreakerState(name, self._retry_after(*pair) if name == pybreaker.STATE_OPEN else 0.0)

    def shared_states(self) -> dict[str, str]:
        """Each provider's breaker state as Redis holds it, in one MGET; unlike `state`, a Redis error is raised
        (a metrics scrape says it could not read the state rather than report closed)."""
        providers = sorted(self.policies)
        base = pybreaker.CircuitRedisStorage.BASE_NAMESPACE
        raw = self.client.mget([f"{self.namespace}:{p}:{base}:state" for p in providers])
        return {p: (v.decode() if isinstance(v, bytes) else v) or pybreaker.STATE_CLOSED
                for p, v in zip(providers, raw, strict=True)}

    def _breaker(self, provider: str) -> tuple[pybreaker.CircuitBreaker, pybreaker.CircuitRedisStorage] | None:
        if provider not in self._breakers:
            policy = self.policies.get(provider, BreakerPolicy())
            try:
                storage = SharedBreakerStorage(pybreaker.STATE_CLOSED, self.client, f"{self.namespace}:{provider}",
                                               self.state_ttl_s)
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
    def _retry_after(breaker: pybreaker.CircuitBreaker, storage: pybreaker.CircuitRedisStorage,
                     floor: float = 0.5) -> float:
        """Seconds until the open breaker lets a trial call through (at least `floor`)."""
        opened_at = storage.opened_at
        if opened_at is None:
            return float(breaker.reset_timeout)
        elapsed = time.time() - opened_at.timestamp()
        return max(float(breaker.reset_timeout) - elapsed, floor)


def _count(breaker: pybreaker.CircuitBreaker, record: Callable[[], object]) -> None:
    """Count a call's outcome under the breaker's lock. pybreaker says "this failure opened the breaker" by raising;
    the caller raises the call's own error instead, so the step counts a failed attempt and the next call waits."""
    with breaker._lock:
        try:
            record()
        except Exception:  # noqa: BLE001 - CircuitBreakerError, the call's own error again, or Redis (fail open)
            pass
