"""What a service call needs from the outside world, built once per process by an entrypoint."""
from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from infra.broker import Publisher, make_celery
from infra.config import Settings
from infra.db import Database
from infra.providers import Providers


@dataclass
class Runtime:
    settings: Settings
    db: Database
    providers: Providers
    publisher: Publisher

    def close(self) -> None:
        self.db.dispose()
        for client in (self.providers.payment, self.providers.delivery, self.providers.messaging):
            client.close()


def build_runtime(settings: Settings, celery: Celery | None = None, db: Database | None = None) -> Runtime:
    """Wire settings to a database, provider clients and a publisher."""
    celery = celery or make_celery(settings)
    return Runtime(
        settings=settings,
        db=db or Database.from_url(settings.database_url),
        providers=Providers.from_urls(settings.payment_url, settings.delivery_url, settings.messaging_url,
                                      settings.provider_timeout_s),
        publisher=Publisher(celery, settings.queue),
    )
