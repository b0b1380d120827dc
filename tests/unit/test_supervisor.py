"""`bookmarket up`'s supervisor: a crashed worker is started again; a child that keeps dying, or any other child that
dies, stops the stack."""
from __future__ import annotations

import os
import sys

import pytest

from cli.supervisor import MAX_RESTARTS, Supervisor

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


def test_a_worker_that_keeps_crashing_stops_the_stack_naming_it() -> None:
    now = [0.0]
    supervisor = Supervisor(dict(os.environ), clock=lambda: now[0])
    try:
        supervisor.start("worker1", DIES, restart=True)
        for _ in range(MAX_RESTARTS):
            dead(supervisor, "worker1")
            supervisor.check_alive()
            now[0] += 1
        dead(supervisor, "worker1")
        with pytest.raises(RuntimeError, match=rf"worker1 exited with code 3 \({MAX_RESTARTS + 1} times in 60s\)"):
            supervisor.check_alive()
    finally:
        supervisor.stop(grace_s=1)


def test_crashes_spread_over_more_than_the_window_are_each_restarted() -> None:
    now = [0.0]
    supervisor = Supervisor(dict(os.environ), clock=lambda: now[0])
    try:
        supervisor.start("worker1", DIES, restart=True)
        for _ in range(MAX_RESTARTS * 2):
            dead(supervisor, "worker1")
            supervisor.check_alive()
            now[0] += 30
    finally:
        supervisor.stop(grace_s=1)


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
