"""Runs the stack's processes side by side, starts a crashed worker again, and stops every one of them on Ctrl-C
or SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from infra.metrics import MULTIPROC_DIR, forget_process

RESTART_WINDOW_S = 60.0  # a child that dies more than MAX_RESTARTS times within this window stops the stack
MAX_RESTARTS = 5


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    restart: bool
    deaths: list[float] = field(default_factory=list)


@dataclass
class Supervisor:
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic

    def start(self, name: str, argv: Sequence[str], restart: bool = False) -> None:
        """Start a child in its own process group, so stopping it stops its own children too. A child started with
        `restart` is started again when it dies (a worker process that crashed takes its running steps with it;
        their leases expire and the sweeper sends them again, to this worker once it is back)."""
        self.children.append(Child(name, list(argv), self._spawn(argv), restart))

    def _spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(argv), env=self.env, start_new_session=True)

    def wait_http(self, name: str, url: str, timeout_s: float = 60) -> None:
        """Block until `url` answers, or raise if the child died or time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer at {url} within {timeout_s:g}s")

    def check_alive(self) -> None:
        """Start again a dead child that may be restarted; raise for any other dead child, or for one that keeps
        dying (more than MAX_RESTARTS times in RESTART_WINDOW_S)."""
        for child in self.children:
            code = child.proc.poll()
            if code is None:
                continue
            now = self.clock()
            child.deaths = [t for t in child.deaths if now - t < RESTART_WINDOW_S] + [now]
            if not child.restart or len(child.deaths) > MAX_RESTARTS:
                often = f" ({len(child.deaths)} times in {RESTART_WINDOW_S:g}s)" if child.restart else ""
                raise RuntimeError(f"{child.name} exited with code {code}{often}")
            print(f"bookmarket: {child.name} exited with code {code}; starting it again", file=sys.stderr, flush=True)
            _signal_group(child.proc, signal.SIGKILL)  # whatever it left behind in its group
            forget_process(child.proc.pid, self.env.get(MULTIPROC_DIR))  # its calls in flight are no more
            child.proc = self._spawn(child.argv)

    def run_until_signal(self) -> int:
        """Wait for SIGINT/SIGTERM or for a child to die for good; returns the exit code to use."""
        stop = {"signal": 0}

        def on_signal(signum: int, _frame: object) -> None:
            stop["signal"] = signum

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop["signal"]:
            try:
                self.check_alive()
            except RuntimeError as exc:
                print(f"bookmarket: {exc}; stopping", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.3)
        return 0

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM every child (each shuts its own children down gracefully), then SIGKILL each group."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
