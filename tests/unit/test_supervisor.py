"""`bookmarket up`'s supervisor: a crashed worker is started again; a child that keeps dying, or any other child that
dies, stops the stack."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.supervisor import MAX_RESTARTS, Supervisor
from infra.metrics import MULTIPROC_DIR

DIES = [sys.executable, "-c", "raise SystemExit(3)"]
LIVES = [sys.executable, "-c", "import time; time.sleep(30)"]


def dead(supervisor: Supervisor, name: str) -> None:
    child = next(c for c in supervisor.children if c.name == name)
    child.proc.wait(timeout=10)


def test_a_worker_that_crashes_is_started_again_with_the_same_command() -> None:
    supervisor = Supervisor(dict(os.environ))
    try:
        supervisor.start("worker1", DIES, restart=True)
        first = supervisor.children[0].proc
        dead(supervisor, "worker1")

        supervisor.check_alive()

        assert supervisor.children[0].proc is not first and supervisor.children[0].argv == DIES
    finally:
        supervisor.stop(grace_s=1)


@pytest.fixture
def crashing() -> Iterator[tuple[Supervisor, list[float]]]:
    """A supervisor on a clock the test moves, running a worker that exits with code 3 as soon as it starts."""
    now = [0.0]
    supervisor = Supervisor(dict(os.environ), clock=lambda: now[0])
    supervisor.start("worker1", DIES, restart=True)
    try:
        yield supervisor, now
    finally:
        supervisor.stop(grace_s=1)


def restart_after_crashes(supervisor: Supervisor, now: list[float], crashes: int, every_s: float) -> int:
    """Let the worker crash `crashes` times, `every_s` apart, restarting it each time; the restarts made."""
    pids = set()
    for _ in range(crashes):
        dead(supervisor, "worker1")
        supervisor.check_alive()
        pids.add(supervisor.children[0].proc.pid)
        now[0] += every_s
    return len(pids)


def test_a_worker_that_keeps_crashing_stops_the_stack_naming_it(crashing: tuple[Supervisor, list[float]]) -> None:
    supervisor, now = crashing
    assert restart_after_crashes(supervisor, now, MAX_RESTARTS, every_s=1) == MAX_RESTARTS
    dead(supervisor, "worker1")
    with pytest.raises(RuntimeError, match=rf"worker1 exited with code 3 \({MAX_RESTARTS + 1} times in 60s\)"):
        supervisor.check_alive()


def test_crashes_spread_over_more_than_the_window_are_each_restarted(
    crashing: tuple[Supervisor, list[float]],
) -> None:
    supervisor, now = crashing
    assert restart_after_crashes(supervisor, now, MAX_RESTARTS * 2, every_s=30) == MAX_RESTARTS * 2


def test_any_other_child_that_dies_stops_the_stack() -> None:
    supervisor = Supervisor(dict(os.environ))
    try:
        supervisor.start("api", DIES)
        supervisor.start("worker1", LIVES, restart=True)
        dead(supervisor, "api")
        with pytest.raises(RuntimeError, match="api exited with code 3$"):
            supervisor.check_alive()
    finally:
        supervisor.stop(grace_s=1)


def test_a_worker_that_dies_leaves_no_calls_in_flight_in_the_shared_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    in_flight_then_crash = [sys.executable, "-c", "from infra import metrics; "
                            "metrics.CALLS_IN_FLIGHT.labels('payment').inc(); raise SystemExit(3)"]
    supervisor = Supervisor({**os.environ, MULTIPROC_DIR: str(folder)})
    try:
        supervisor.start("worker1", in_flight_then_crash, restart=True)
        first = supervisor.children[0].proc
        dead(supervisor, "worker1")
        assert (folder / f"gauge_livesum_{first.pid}.db").exists()

        supervisor.check_alive()

        assert not (folder / f"gauge_livesum_{first.pid}.db").exists()
    finally:
        supervisor.stop(grace_s=1)
