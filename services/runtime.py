"""What a service call needs from the outside world, built once per process by an entrypoint."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from celery import Celery

from domain.model import utcnow
from infra.breakers import BreakerPolicy, Breakers
from infra.broker import Publisher, make_celery
from infra.bulkheads import Bulkheads
from infra.config import Settings
from infra.db import Database
from infra.providers import Providers
from infra.redis_client import redis_from_url
from saga.definition import SagaDefinition
from saga.order_saga import DEFINITIONS, PROVIDERS
from services.effects import STEP_EFFECTS, StepEffects, check_step_table


@dataclass
class Runtime:
    settings: Settings
    db: Database
    providers: Providers
    publisher: Publisher
    definitions: Mapping[str, SagaDefinition] = field(default_factory=lambda: dict(DEFINITIONS))
    breakers: Breakers | None = None
    bulkheads: Bulkheads = field(default_factory=lambda: Bulkheads({}))
    steps: Mapping[str, StepEffects] = field(default_factory=lambda: dict(STEP_EFFECTS))
    clock: Callable[[], datetime] = utcnow  # every service reads the time here, so tests can move it
    # set when the process is shutting down: a running task finishes its call and sends the saga's next step
    # through the broker instead of running it inline, so a warm shutdown waits for one call per task, no more
    draining: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.db.dispose()
        for client in (self.providers.payment, self.providers.delivery, self.providers.messaging):
            client.close()


def build_runtime(settings: Settings, celery: Celery | None = None, db: Database | None = None,
                  role: str = "worker") -> Runtime:
    """Wire settings to a database (the connections named `bookmarket-<role>`), provider clients and a publisher."""
    celery = celery or make_celery(settings)
    return Runtime(
        settings=settings,
        db=db or Database.for_process(settings, role),
        providers=Providers.from_urls(settings.payment_url, settings.delivery_url, settings.messaging_url,
                                      settings.provider_timeout_s),
        publisher=Publisher(celery, settings.queue, settings.chaos_duplicate_dispatch, settings.publish_timeout_s,
                            step_routes(settings.step_queues, DEFINITIONS.values())),
        definitions=configured_definitions(settings.step_policies),
        breakers=build_breakers(settings),
        bulkheads=Bulkheads({p: int(n) for p, n in settings.bulkhead_max_calls.items()},
                            wait_s=settings.bulkhead_wait_s, max_waiters=settings.bulkhead_max_waiters),
    )


def provider_steps(definitions: Iterable[SagaDefinition]) -> list[str]:
    """Every step, in every saga definition, that calls a provider and so travels as a task."""
    return sorted({s.name for d in definitions for s in d.all_steps if not s.is_local})


def step_routes(step_queues: Mapping[str, str], definitions: Iterable[SagaDefinition]) -> dict[str, str]:
    """STEP_QUEUES as step -> queue for every provider step it routes: a key naming a provider routes all that
    provider's steps (its calls and their undoing: pay and cancel_payment), a key naming a step routes that step
    and wins over its provider's. A key that is neither stops the process here."""
    steps = [s for d in definitions for s in d.all_steps if not s.is_local]
    providers = {s.provider for s in steps}
    unknown = set(step_queues) - providers - {s.name for s in steps}
    if unknown:
        raise ValueError(f"STEP_QUEUES: {sorted(unknown)} name no provider ({', '.join(sorted(map(str, providers)))}) "
                         "and no provider step")
    routes = {s.name: step_queues[str(s.provider)] for s in steps if s.provider in step_queues}
    routes.update({s.name: step_queues[s.name] for s in steps if s.name in step_queues})
    return routes


def configured_definitions(policies: Mapping[str, Mapping[str, float]]) -> dict[str, SagaDefinition]:
    """The saga definitions with step policies from configuration ("*" applies to every step not named), each
    checked against the step table: a step the table lacks stops the process here, naming the step."""
    unknown = {k for p in policies.values() for k in p} - {"max_attempts", "base_s", "cap_s", "max_wait_s"}
    if unknown:
        raise ValueError(f"STEP_POLICIES: unknown setting(s) {sorted(unknown)}")
    result = {}
    for kind, definition in DEFINITIONS.items():
        names = [s.name for s in definition.steps + definition.compensations]
        chosen = {name: {**policies.get("*", {}), **policies.get(name, {})} for name in names}
        result[kind] = definition.with_policies({name: p for name, p in chosen.items() if p})
    check_step_table(result.values(), STEP_EFFECTS)
    return result


def build_breakers(settings: Settings) -> Breakers:
    """A breaker per provider; thresholds from BREAKER_FAIL_MAX/BREAKER_RESET_S or BREAKER_POLICIES."""
    def policy(provider: str) -> BreakerPolicy:
        override = settings.breaker_policies.get(provider, {})
        return BreakerPolicy(int(override.get("fail_max", settings.breaker_fail_max)),
                             float(override.get("reset_s", settings.breaker_reset_s)))

    client = redis_from_url(settings.redis_url, settings.breaker_redis_timeout_s,  # on the POST /orders path too
                            sentinel_master=settings.redis_sentinel_master)
    return Breakers(client, {p: policy(p) for p in PROVIDERS}, namespace=f"bookmarket:{settings.queue}:breaker")
