"""The recovery sweeper as a loop in each worker's main process.

Beat also schedules `saga.sweep`, but beat goes through the broker and can die with it (an embedded beat was seen
to shut down when Redis was killed); this loop needs only the database to find what to send, so recovery resumes
by itself as soon as the broker is back. Several sweepers at once are harmless: due steps are taken with
SKIP LOCKED and every dispatch is idempotent.
"""
from __future__ import annotations

import logging
import threading

from infra.config import Settings
from infra.db import Database
from services.runtime import Runtime, build_runtime
from services.sweeper import sweep

log = logging.getLogger(__name__)


class SweeperLoop:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, **_: object) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bookmarket-sweeper", daemon=True)
            self._thread.start()

    def stop(self, **_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        runtime: Runtime | None = None
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                # its own broker connections, and one database connection: a sweep is one transaction at a time
                runtime = runtime or build_runtime(self.settings, db=Database.for_process(self.settings, "sweeper", 1),
                                                   role="sweeper")
                sweep(runtime)
            except Exception:  # noqa: BLE001 - the database or broker is down: try again next round
                log.warning("sweep failed; retrying in %ss", self.settings.sweep_interval_s, exc_info=True)
        if runtime is not None:
            runtime.close()
