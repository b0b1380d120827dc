"""The recovery sweeper as a loop in each worker's main process.

Beat also schedules `saga.sweep`, but beat goes through the broker and can die with it (an embedded beat was seen
to shut down when Redis was killed); this loop needs only the database to find what to send, so recovery resumes
by itself as soon as the broker is back. Several sweepers at once are harmless: due steps are taken with
SKIP LOCKED and every dispatch is idempotent.

With RETENTION_DAYS above 0 the loop also makes a retention pass every RETENTION_INTERVAL_S (as beat's
`saga.retention` does when beat runs): at most RETENTION_MAX_BATCHES short batches, and on PostgreSQL only in one
process at a time (the pass lock is tried, never waited for).
"""
from __future__ import annotations

import logging
import threading
import time

from infra.config import Settings
from infra.db import Database
from services.retention import retention_pass
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
        retention_due = time.monotonic() + self.settings.retention_interval_s
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                # its own broker connections, and one database connection: a sweep is one transaction at a time
                runtime = runtime or build_runtime(self.settings, db=Database.for_process(self.settings, "sweeper", 1),
                                                   role="sweeper")
                sweep(runtime)
                if self.settings.retention_days > 0 and time.monotonic() >= retention_due:
                    retention_due = time.monotonic() + self.settings.retention_interval_s
                    self.retain(runtime)
            except Exception:  # noqa: BLE001 - the database or broker is down: try again next round
                log.warning("sweep failed; retrying in %ss", self.settings.sweep_interval_s, exc_info=True)
        if runtime is not None:
            runtime.close()

    def retain(self, runtime: Runtime) -> None:
        """A retention pass (RETENTION_MAX_BATCHES batches at most), as beat's `saga.retention` does; on PostgreSQL
        the pass lock lets one process at a time do it, the others' passes stop at once. It delays this worker's
        next sweep by its length (measured: about 0.1 s a batch of 1000), once every RETENTION_INTERVAL_S."""
        s = self.settings
        try:
            retention_pass(runtime.db, s.retention_days, s.retention_batch, s.retention_mode, s.retention_max_batches,
                           runtime.clock)
        except Exception:  # noqa: BLE001 - the next pass tries again; sweeping goes on meanwhile
            log.warning("retention pass failed; next one in %ss", s.retention_interval_s, exc_info=True)
