"""What a service call needs from the outside world, built once per process by an entrypoint."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from celery import Celery

from infra.broker import Publisher, make_celery
from infra.config import Settings
from infra.db import Database
from infra.providers import Providers
from saga.definition import RetryPolicy, SagaDefinition
from saga.order_saga import DEFINITIONS


@dataclass
class Runtime:
    settings: Settings
    db: Database
    providers: Providers
    publisher: Publisher
    definitions: Mapping[str, SagaDefinition] = field(default_factory=lambda: dict(DEFINITIONS))

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
        definitions=configured_definitions(settings.retry_policies),
    )


def configured_definitions(policies: Mapping[str, Mapping[str, float]]) -> dict[str, SagaDefinition]:
    """The saga definitions with retry policies from configuration ("*" applies to every step not named)."""
    result = {}
    for kind, definition in DEFINITIONS.items():
        names = [s.name for s in definition.steps + definition.compensations]
        chosen = {name: policies.get(name, policies.get("*")) for name in names}
        retries = {name: _policy(definition.step(name).retry, p) for name, p in chosen.items() if p}
        result[kind] = definition.with_retries(retries)
    return result


def _policy(base: RetryPolicy, override: Mapping[str, float]) -> RetryPolicy:
    unknown = set(override) - {"max_attempts", "base_s", "cap_s"}
    if unknown:
        raise ValueError(f"RETRY_POLICIES: unknown setting(s) {sorted(unknown)}")
    return RetryPolicy(
        max_attempts=int(override.get("max_attempts", base.max_attempts)),
        base_s=float(override.get("base_s", base.base_s)),
        cap_s=float(override.get("cap_s", base.cap_s)),
    )
