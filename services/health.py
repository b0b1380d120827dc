"""Health of the things a request needs: the database and the broker."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa

from infra.broker import broker_url, is_amqp
from infra.redis_client import redis_from_url
from services.runtime import Runtime

OK = "ok"


def check_health(rt: Runtime) -> dict[str, str]:
    """'ok' or the error, for each dependency, and an overall status."""
    report = {"database": _database(rt), "broker": _broker(rt)}
    report["status"] = "ok" if all(v == "ok" for v in report.values()) else "degraded"
    return report


def _database(rt: Runtime) -> str:
    try:
        with rt.db.reading() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {type(exc).__name__}"
    return "ok"


def _broker(rt: Runtime) -> str:
    try:
        with rt.publisher.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=rt.settings.publish_timeout_s)
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"
    return "ok"


@dataclass
class Probe:
    """One dependency's check, run on its own thread so the caller waits at most the bound. While a check is
    still stuck (a frozen server), the next ones answer 'timeout' at once instead of piling up threads."""

    name: str
    check: Callable[[], None]
    running: Future[None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, timeout_s: float) -> str:
        with self.lock:
            if self.running is None or self.running.done():
                self.running = self._start()
            running = self.running
        try:
            running.result(timeout=timeout_s)
        except TimeoutError:
            return f"timeout: no answer within {timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"error: {type(exc).__name__}"
        return OK

    def _start(self) -> Future[None]:
        future: Future[None] = Future()

        def work() -> None:
            try:
                self.check()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=work, name=f"readiness-{self.name}", daemon=True).start()
        return future


class Readiness:
    """GET /readyz: each check (by default: the database answers a statement, the broker a PING) within
    `timeout_s`."""

    def __init__(self, checks: dict[str, Callable[[], None]], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.probes = [Probe(name, check) for name, check in checks.items()]

    @classmethod
    def of(cls, rt: Runtime, timeout_s: float) -> Readiness:
        url = broker_url(rt.settings)
        if is_amqp(url):  # RabbitMQ: a connection opened (the handshake answered) within the bound
            return cls({"database": lambda: _select_one(rt), "broker": lambda: _amqp_ping(url, timeout_s)},
                       timeout_s)
        broker = redis_from_url(url, timeout_s, max_connections=2,
                                sentinel_master=rt.settings.redis_sentinel_master)
        return cls({"database": lambda: _select_one(rt), "broker": lambda: _ping(broker)}, timeout_s)

    def check(self) -> dict[str, str]:
        """'ok', 'timeout: ...' or 'error: <kind>' for each dependency."""
        return {probe.name: probe.run(self.timeout_s) for probe in self.probes}


def down(report: dict[str, str]) -> list[str]:
    """The dependencies of a readiness report that did not answer."""
    return [name for name, state in report.items() if state != OK]


def _select_one(rt: Runtime) -> None:
    with rt.db.reading() as conn:
        conn.execute(sa.text("SELECT 1"))


def _ping(client: redis.Redis) -> None:
    client.ping()


def _amqp_ping(url: str, timeout_s: float) -> None:
    from kombu import Connection

    with Connection(url, connect_timeout=timeout_s, heartbeat=0, transport_options={"read_timeout": timeout_s}) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
