"""Prometheus metrics written by the API and worker processes (events: counters and histograms), and what a scrape
reads them with.

Across processes (gunicorn's API workers, Celery workers) prometheus_client's multiprocess mode is used when
PROMETHEUS_MULTIPROC_DIR names a folder shared by them (it must be set before this module is imported: `bookmarket
up` and `bookmarket api` set it); a scrape then sums every process's files. What is state rather than events (sagas
parked now, breaker states, queue depth) is computed at scrape time by a collector (services/metrics.py).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)
disable_created_metrics()  # no `_created` series: the multiprocess mode has none, so the page is the same either way
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client itself, not a setting of ours
# Sagas last from a fraction of a second to hours (retries with backoff, waiting on a provider).
SAGA_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))

SAGAS_STARTED = Counter("bookmarket_sagas_started", "Sagas started", ["kind"])
SAGAS_FINISHED = Counter("bookmarket_sagas_finished", "Sagas that reached an end", ["kind", "outcome"])
SAGA_DURATION = Histogram("bookmarket_saga_duration_seconds", "Saga start to end", ["kind", "outcome"],
                          buckets=SAGA_BUCKETS)
STEP_ATTEMPTS = Counter("bookmarket_step_attempts", "Step attempts by how they ended", ["step", "outcome"])
STEP_DURATION = Histogram("bookmarket_step_duration_seconds", "One step attempt, claim to recorded outcome",
                          ["step", "outcome"], buckets=STEP_BUCKETS)
ADMISSION_REFUSALS = Counter("bookmarket_admission_refusals", "Orders turned away with 503", ["reason"])
CALLS_IN_FLIGHT = Gauge("bookmarket_provider_calls_in_flight", "Provider calls in flight (all live processes)",
                        ["provider"], multiprocess_mode="livesum")


def saga_started(kind: str) -> None:
    SAGAS_STARTED.labels(kind).inc()


def saga_finished(kind: str, outcome: str, seconds: float | None) -> None:
    SAGAS_FINISHED.labels(kind, outcome).inc()
    if seconds is not None:
        SAGA_DURATION.labels(kind, outcome).observe(max(seconds, 0.0))


def step_attempted(step: str, outcome: str, seconds: float | None = None) -> None:
    STEP_ATTEMPTS.labels(step, outcome).inc()
    if seconds is not None:
        STEP_DURATION.labels(step, outcome).observe(max(seconds, 0.0))


def admission_refused(reason: str) -> None:
    ADMISSION_REFUSALS.labels(reason).inc()


@contextmanager
def call_in_flight(provider: str) -> Iterator[None]:
    gauge = CALLS_IN_FLIGHT.labels(provider)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def multiprocess_dir() -> str | None:
    """The shared folder of multiprocess mode, when there is one."""
    return os.environ.get(MULTIPROC_DIR) or None


def _writes_files() -> bool:
    """This process's own metrics live in the multiprocess folder (it was set when prometheus_client loaded)."""
    return values.ValueClass is not values.MutexValue


def scrape_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry with the event metrics of every process sharing the multiprocess folder (or of this process
    alone without one) and the `extra` collectors."""
    registry = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    sources: list[Collector] = []
    if folder is not None and os.path.isdir(folder):
        sources.append(MultiProcessCollector(None, path=folder))
    if folder is None or not _writes_files():  # this process's metrics are in memory, not in the folder
        sources.append(_ProcessMetrics())
    registry.register(_Merged(sources))
    for collector in extra:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def forget_process(pid: int, folder: str | None = None) -> None:
    """A process sharing the folder is gone: its live gauges stop counting (gunicorn's child_exit, a worker that
    `bookmarket up` starts again)."""
    folder = folder or multiprocess_dir()
    if folder is not None and os.path.isdir(folder):
        mark_process_dead(pid, folder)


def serve(port: int) -> None:
    """WORKER_METRICS_PORT: serve this process's metrics (or its folder's) on their own HTTP port; 0: do not. A port
    taken (two workers of one host given the same) costs the metrics, not the worker."""
    if port <= 0:
        return
    try:
        start_http_server(port, registry=scrape_registry())
    except OSError as exc:
        log.error("WORKER_METRICS_PORT %d: cannot serve metrics there (%s); the worker runs without", port, exc)


class _Merged(Collector):
    """Families of the same name from several sources as one (a name twice makes the page invalid), the samples
    with the same labels summed: the folder's processes and this one, when it keeps its own in memory."""

    def __init__(self, sources: list[Collector]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        totals: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
        for source in self.sources:
            for family in source.collect():
                families.setdefault(family.name, family)
                samples = totals.setdefault(family.name, {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    known = samples.get(key)
                    samples[key] = sample if known is None else known._replace(value=known.value + sample.value)
        for name, family in families.items():
            family.samples = list(totals[name].values())
            yield family


class _ProcessMetrics(Collector):
    """The default registry of this process (its own counters, in memory)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
