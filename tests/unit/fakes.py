"""In-process stand-ins for the API's unit tests: a publisher that records, a runtime on a SQLite file.

No broker, no worker, no network: providers point at a port nothing is ever asked on.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from infra import migrate
from infra.config import Settings
from infra.db import Database
from infra.providers import Providers
from services.runtime import Runtime
from tests.support import TOKENS_SETTING

NOWHERE = "http://127.0.0.1:9"


class RecordingPublisher:
    """Same interface as infra.broker.Publisher; records every (saga_id, step) it is asked to send."""

    def __init__(self, fail: bool = False) -> None:
        self.app: Any = None
        self.queue = "saga"
        self.fail = fail
        self.sent: list[tuple[int, str]] = []
        self.routes: dict[str, str] = {}

    def queue_for(self, step: str) -> str:
        return self.routes.get(step, self.queue)

    def publish(self, dispatches: Sequence[tuple[int, str]], orders: Any = None) -> list[tuple[int, str]]:
        """Record the dispatches; answer them all as failed when `fail` is set, none otherwise."""
        batch = [(int(saga_id), str(step)) for saga_id, step in dispatches]
        if self.fail:
            return batch
        self.sent.extend(batch)
        return []


def settings_for(database_url: str) -> Settings:
    """The fast tier's settings; the order rate limits are counted in process (tests/unit/test_rate_limits.py)."""
    return replace(_settings_for(database_url), rate_limit_storage_url="memory://")


def _settings_for(database_url: str) -> Settings:
    return Settings.from_env({
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "PAYMENT_URL": f"{NOWHERE}/payment",
        "DELIVERY_URL": f"{NOWHERE}/delivery",
        "MESSAGING_URL": f"{NOWHERE}/messaging",
        "PROVIDER_TIMEOUT_S": "1",
        "PUBLISH_TIMEOUT_S": "1",
        "BOOKMARKET_TOKENS": TOKENS_SETTING,
    })


def runtime_for(database_url: str, publisher: RecordingPublisher | None = None) -> Runtime:
    """A Runtime on `database_url` (not migrated here) with a recording publisher."""
    settings = settings_for(database_url)
    return Runtime(
        settings=settings,
        db=Database.from_url(database_url),
        providers=Providers.from_urls(settings.payment_url, settings.delivery_url, settings.messaging_url,
                                      settings.provider_timeout_s),
        publisher=publisher if publisher is not None else RecordingPublisher(),  # type: ignore[arg-type]
    )


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


@functools.cache
def migrated_template() -> Path:
    """A SQLite file migrated and seeded once per test session; each test gets a copy (a copy costs a
    millisecond, a migration a fifth of a second)."""
    folder = Path(tempfile.mkdtemp(prefix="bookmarket-template-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "bookmarket.db"
    migrate.upgrade(sqlite_url(path))
    return path


def make_runtime(tmp_path: Path, publisher: RecordingPublisher | None = None) -> Runtime:
    """A migrated, seeded SQLite database in tmp_path and a Runtime on it."""
    path = Path(tmp_path) / "bookmarket.db"
    shutil.copyfile(migrated_template(), path)
    return runtime_for(sqlite_url(path), publisher)
