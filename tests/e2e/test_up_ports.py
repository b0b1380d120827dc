"""`bookmarket up` on a port that is taken: one line naming the port and the option, exit code 2, nothing started."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support import free_port

pytestmark = pytest.mark.embedded
CONFIG_NAMES = ("DATABASE_URL", "REDIS_URL", "PAYMENT_URL", "DELIVERY_URL", "MESSAGING_URL")


def _up(data: Path, **ports: int) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `bookmarket up` with these ports (free ones for the rest) and return how it ended and how long it took."""
    chosen = {"port": free_port(), "sandbox_port": free_port(), "flower_port": free_port(), **ports}
    options = [arg for name, port in chosen.items() for arg in (f"--{name.replace('_', '-')}", str(port))]
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_NAMES}
    env["BOOKMARKET_TEST_MARK"] = str(data)  # every process `up` starts inherits it
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cli.main", "up", "--data-dir", str(data), *options], env=env,
                          capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


@pytest.mark.parametrize("option", ["port", "sandbox_port", "flower_port"])
def test_a_busy_port_stops_up_at_once_with_one_line_naming_the_option(tmp_path: Path, option: str) -> None:
    data = tmp_path / "var"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done, took_s = _up(data, **{option: port})
    flag = f"--{option.replace('_', '-')}"
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == f"bookmarket: port {port} is in use; choose another with {flag}\n"
    assert done.stdout == ""  # not even "migrating": the check comes first
    assert took_s < 5, f"took {took_s:.1f}s"
    assert not data.exists()  # no database, no embedded Redis
    assert _processes_marked(str(data)) == []


def _processes_marked(mark: str) -> list[int]:
    """The processes still running with BOOKMARKET_TEST_MARK=mark in their environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("BOOKMARKET_TEST_MARK") == mark:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_one_port_given_twice_is_refused_before_anything_starts(tmp_path: Path) -> None:
    port = free_port()
    done, _ = _up(tmp_path / "var", port=port, flower_port=port)
    assert done.returncode == 2
    assert done.stderr == f"bookmarket: port {port} is given to both --port and --flower-port; choose another with " \
                          "--flower-port\n"
    assert not (tmp_path / "var").exists()
