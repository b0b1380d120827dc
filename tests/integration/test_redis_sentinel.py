"""Redis Sentinel: a master, one replica and one Sentinel (each a redis-server on a free port, in a temporary
folder), and the stack on REDIS_URL=sentinel://...: the broker (kombu's Sentinel transport), the breakers, the
rate limits, /metrics' queue depth and the readiness check all reach the master through the Sentinel. Orders
complete; after `SENTINEL FAILOVER` promotes the replica, new orders complete too and the counters live on the
new master."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.app import create_app
from tests.integration.conftest import build_stack
from tests.support import api_client, free_port, wait_until

pytestmark = pytest.mark.integration

MASTER_NAME = "shop"


class Server:
    def __init__(self, folder: Path, *args: str, config: Path | None = None) -> None:
        self.port = free_port()
        folder.mkdir()
        log = (folder / "log").open("wb")
        argv = ["redis-server", *([str(config)] if config else []), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(folder), *args]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.client = redis.Redis(port=self.port, socket_timeout=2)
        wait_until(self._pings, 15, 0.05, f"redis on {self.port}")

    def _pings(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def sentinel_redis(tmp_path: Path) -> Iterator[tuple[Server, Server, Server]]:
    master = Server(tmp_path / "master", "--repl-diskless-sync-delay", "0")
    replica = Server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port),
                     "--repl-diskless-sync-delay", "0")
    wait_until(lambda: replica.client.info("replication")["master_link_status"] == "up", 20, 0.1, "replication")
    config = tmp_path / "sentinel.conf"  # a Sentinel rewrites its configuration file: it must have its own
    config.write_text(f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 1\n"
                      f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
                      f"sentinel failover-timeout {MASTER_NAME} 10000\n")
    sentinel = Server(tmp_path / "sentinel", "--sentinel", config=config)
    servers = (master, replica, sentinel)
    try:
        wait_until(lambda: sentinel.client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME), 20, 0.2,
                   "the Sentinel to see the replica")
        yield servers
    finally:
        for server in servers:
            server.stop()


def master_port(sentinel: Server) -> int:
    _, port = sentinel.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
    return int(port)


def test_orders_complete_through_a_sentinel_and_keep_completing_after_a_failover(
        sentinel_redis: tuple[Server, Server, Server], tmp_path: Path, postgres_server: str) -> None:
    master, replica, sentinel = sentinel_redis
    url = f"sentinel://127.0.0.1:{sentinel.port}/0"
    (tmp_path / "stack").mkdir()
    with build_stack(tmp_path / "stack", "postgresql", postgres_server, REDIS_URL=url,
                     REDIS_SENTINEL_MASTER=MASTER_NAME, RATE_LIMIT_ORDERS_PER_TOKEN="1000 per minute") as stack:
        # the in-process API of build_stack counts in memory (the fast tier's setting): one that counts in Redis
        client = api_client(create_app(stack.settings))

        def order_completes(customer_id: int) -> None:
            answer = client.post("/orders", json={"customer_id": customer_id, "book_id": 1, "qty": 1})
            assert answer.status_code == 202, answer.get_json()
            saga = stack.wait_saga(answer.get_json()["saga_id"], timeout=60)
            assert saga["status"] == "COMPLETED", saga

        for customer_id in (1, 2, 3):
            order_completes(customer_id)
        assert client.get("/readyz").status_code == 200
        assert master.client.keys("bookmarket:ratelimit*"), "the rate limit is not counted on the master"
        assert 'bookmarket_scrape_error{source="redis"} 0.0' in client.get("/metrics").get_data(as_text=True)

        sentinel.client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_until(lambda: master_port(sentinel) == replica.port, 30, 0.2, "the replica to be promoted")
        wait_until(lambda: replica.client.info("replication")["role"] == "master", 30, 0.2, "the new master")
        wait_until(lambda: master.client.info("replication")["role"] == "slave", 30, 0.2, "the old master demoted")
        for key in replica.client.keys("bookmarket:ratelimit*"):  # what is counted from here on: on the new one
            replica.client.delete(key)

        for customer_id in (4, 5, 6):
            order_completes(customer_id)
        assert replica.client.keys("bookmarket:ratelimit*"), "the rate limit is not counted on the new master"
        assert client.get("/readyz").status_code == 200
        assert 'bookmarket_scrape_error{source="redis"} 0.0' in client.get("/metrics").get_data(as_text=True)
        assert master.client.info("replication")["master_port"] == replica.port  # the old one follows the new one
