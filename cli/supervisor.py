"""Runs the stack's processes side by side and stops every one of them on Ctrl-C or SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Supervisor:
    env: dict[str, str]
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str]) -> None:
        """Start a child in its own process group, so stopping it stops its own children too."""
        proc = subprocess.Popen(list(argv), env=self.env, start_new_session=True)
        self.children.append((name, proc))

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
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}")

    def run_until_signal(self) -> int:
        """Wait for SIGINT/SIGTERM or for a child to die; returns the exit code to use."""
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
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in self.children:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
