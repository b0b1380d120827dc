"""The worker's heartbeat file, for a Kubernetes exec probe (`bookmarket worker-alive`): a thread of the worker
process touches it every WORKER_HEARTBEAT_S while the worker's consumer runs (connected, or reconnecting to the
broker), and stops, removing the file, when the worker shuts down."""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery.bootsteps import RUN

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, path: str, interval_s: float) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sender: Any = None, **_: Any) -> None:
        """worker_ready: its sender is the consumer; beat while its blueprint runs."""
        blueprint = getattr(sender, "blueprint", None)
        self.begin(lambda: blueprint is None or blueprint.state == RUN)

    def begin(self, alive: Callable[[], bool]) -> None:
        self._thread = threading.Thread(target=self._beat, args=(alive,), name="heartbeat", daemon=True)
        self._thread.start()
        log.info("heartbeat: touching %s every %gs", self.path, self.interval_s)

    def stop(self, **_: Any) -> None:
        """worker_shutting_down: no more beats; the file goes, so the probe fails at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 1)
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _beat(self, alive: Callable[[], bool]) -> None:
        while not self._stop.is_set():
            if alive():
                self._touch()
            self._stop.wait(self.interval_s)

    def _touch(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError:
            log.warning("heartbeat: cannot touch %s", self.path, exc_info=True)
