"""What GET /metrics answers: the event metrics of every process (infra/metrics.py) and gauges of the state now,
read at scrape time with bounded, indexed queries and single Redis commands. A source that is down leaves its
gauges out and sets `bookmarket_scrape_error{source=...}` to 1; the rest is still answered."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infra import metrics
from infra import repository as repo
from infra.broker import broker_url, is_amqp, queue_depth
from saga.orchestrator import SagaStatus
from services.runtime import Runtime

log = logging.getLogger(__name__)

COUNT_LIMIT = 100_000  # a count stops here: a scrape stays bounded whatever the backlog
QUERY_TIMEOUT_MS = 1000  # PostgreSQL cancels a scrape's statement that takes longer
BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}
ACTIVE = (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value)
PARKED = SagaStatus.FAILED.value


class StateCollector(Collector):
    """Gauges computed from the database and Redis on every scrape."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily("bookmarket_scrape_error", "1 when this scrape could not read the source",
                                   labels=["source"])
        sources = [("database", self._database), ("redis", self._redis)]
        if is_amqp(broker_url(self.rt.settings)):
            sources.append(("broker", self._rabbitmq))  # the queue depth is RabbitMQ's, not a Redis list's
        for source, read in sources:
            try:
                yield from list(read())
                errors.add_metric([source], 0)
            except Exception:  # noqa: BLE001 - a scrape answers with what it has
                log.warning("metrics: could not read the %s", source, exc_info=True)
                errors.add_metric([source], 1)
        yield errors

    def _database(self) -> Iterator[Metric]:
        now = self.rt.clock()
        with self.rt.db.reading() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}"))
            counts = repo.count_sagas_by_status(conn, (*ACTIVE, PARKED))
            waiting = repo.count_waiting_sagas(conn, COUNT_LIMIT)
            stuck = repo.count_stuck_steps(conn, now, now - timedelta(seconds=self.rt.settings.stuck_after_s),
                                           COUNT_LIMIT)
        yield _by_kind("bookmarket_sagas_active", "Sagas running or compensating now", counts, ACTIVE,
                       self.rt.definitions)
        yield _by_kind("bookmarket_sagas_parked", "Sagas parked FAILED for support now", counts, (PARKED,),
                       self.rt.definitions)
        yield GaugeMetricFamily("bookmarket_sagas_waiting", "Sagas with a step waiting for its provider now",
                                value=waiting)
        stuck_gauge = GaugeMetricFamily(
            "bookmarket_sagas_stuck", "Steps RUNNING past their lease, or due longer than STUCK_AFTER_S and not "
            "started", labels=["reason"])
        for reason, n in stuck.items():
            stuck_gauge.add_metric([reason], n)
        yield stuck_gauge

    def _redis(self) -> Iterator[Metric]:
        breakers = self.rt.breakers
        if breakers is None:
            return
        states = breakers.shared_states()
        queues = self.rt.settings.all_queues()  # SAGA_QUEUE and the STEP_QUEUES ones
        depths: list[int] | None = None
        if not is_amqp(broker_url(self.rt.settings)):  # on RabbitMQ the depth is the broker source's
            with breakers.client.pipeline(transaction=False) as pipe:
                for name in queues:
                    pipe.llen(name)
                depths = [int(n) for n in pipe.execute()]
        breaker_gauge = GaugeMetricFamily("bookmarket_breaker_state", "Circuit breaker: 0 closed, 1 half-open, "
                                          "2 open", labels=["provider"])
        for provider, state in states.items():
            breaker_gauge.add_metric([provider], BREAKER_VALUES.get(state, 2))
        yield breaker_gauge
        if depths is not None:
            yield self._depth(dict(zip(queues, depths, strict=True)))

    def _rabbitmq(self) -> Iterator[Metric]:
        """The messages ready in RabbitMQ's step queues: passive declares, bounded by READINESS_TIMEOUT_S."""
        settings = self.rt.settings
        yield self._depth({name: queue_depth(broker_url(settings), name, settings.readiness_timeout_s)
                           for name in settings.all_queues()})

    def _depth(self, depths: dict[str, int]) -> Metric:
        queue = GaugeMetricFamily("bookmarket_queue_depth", "Messages waiting in each Celery queue", labels=["queue"])
        for name, depth in depths.items():
            queue.add_metric([name], depth)
        return queue


def _by_kind(name: str, documentation: str, counts: list[tuple[str, str, int]], statuses: tuple[str, ...],
             kinds: Iterable[str]) -> GaugeMetricFamily:
    """One sample per saga kind (zero for a kind with none), summed over `statuses`."""
    gauge = GaugeMetricFamily(name, documentation, labels=["kind"])
    totals = dict.fromkeys(sorted(kinds), 0)
    for kind, status, n in counts:
        if status in statuses:
            totals[kind] = totals.get(kind, 0) + n
    for kind, n in totals.items():
        gauge.add_metric([kind], n)
    return gauge


def render(rt: Runtime) -> bytes:
    """The metrics page in the Prometheus text format."""
    return metrics.exposition(metrics.scrape_registry([StateCollector(rt)]))
