"""The vocabulary of a saga definition: steps as data, checked when a definition is built."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace


class DefinitionError(ValueError):
    """A saga definition that breaks a rule (a provider step nobody can undo, an unknown name...)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap: attempt n waits about base * 2**(n-1), at most cap."""

    max_attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 10.0

    def delay(self, attempt: int, jitter: float) -> float:
        """Seconds to wait after `attempt` failed; jitter in [0, 1) spreads it over [half, full]."""
        full: float = min(self.cap_s, self.base_s * 2.0 ** max(attempt - 1, 0))
        return full / 2 + full / 2 * jitter


@dataclass(frozen=True)
class Step:
    """One step: a provider call (provider set) or a change to our database only (provider None)."""

    name: str
    provider: str | None = None
    compensation: str | None = None
    can_undo: bool = True
    best_effort: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 30.0
    max_wait_s: float = 600.0

    @property
    def is_local(self) -> bool:
        return self.provider is None


@dataclass(frozen=True)
class SagaDefinition:
    """A named, versioned list of steps and the compensations that undo them."""

    kind: str
    version: int
    steps: tuple[Step, ...]
    compensations: tuple[Step, ...] = ()
    compensate_on_failure: bool = True  # False: a step failed for good parks the saga FAILED for a person
    # A best-effort step of the compensating phase that runs once everything is undone (telling the customer
    # how the order ended); the saga is COMPENSATED after it, whatever its outcome.
    closing: str | None = None
    # What the customer is told at each ending, by name; placeholders {order_id}, {title}, {amount}.
    messages: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_definition(self)

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def step(self, name: str) -> Step:
        """The step or compensation called `name`."""
        for candidate in self.steps + self.compensations:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def is_compensation(self, name: str) -> bool:
        """True for the steps of the compensating phase: the compensations and the closing step."""
        return any(c.name == name for c in self.compensations)

    @property
    def all_steps(self) -> tuple[Step, ...]:
        return self.steps + self.compensations

    def with_policies(self, policies: Mapping[str, Mapping[str, float]]) -> SagaDefinition:
        """The same definition with retry settings and longest waits overridden per step name."""
        def patch(steps: tuple[Step, ...]) -> tuple[Step, ...]:
            return tuple(_patched(s, policies[s.name]) if s.name in policies else s for s in steps)

        return replace(self, steps=patch(self.steps), compensations=patch(self.compensations))

    def after(self, name: str) -> Step | None:
        """The forward step that follows `name`, or None when `name` is the last."""
        index = self.step_names.index(name)
        return self.steps[index + 1] if index + 1 < len(self.steps) else None


def _patched(step: Step, policy: Mapping[str, float]) -> Step:
    retry = RetryPolicy(
        max_attempts=int(policy.get("max_attempts", step.retry.max_attempts)),
        base_s=float(policy.get("base_s", step.retry.base_s)),
        cap_s=float(policy.get("cap_s", step.retry.cap_s)),
    )
    return replace(step, retry=retry, max_wait_s=float(policy.get("max_wait_s", step.max_wait_s)))


def check_definition(definition: SagaDefinition) -> None:
    """Raise DefinitionError unless every name is unique and every provider step can be undone or says it cannot."""
    names = [s.name for s in definition.steps + definition.compensations]
    if not definition.steps:
        raise DefinitionError(f"saga {definition.kind!r} has no steps")
    if len(names) != len(set(names)):
        raise DefinitionError(f"saga {definition.kind!r} repeats a step name: {names}")
    compensations = {c.name for c in definition.compensations}
    for step in definition.steps:
        _check_step(definition.kind, step, compensations)
    for comp in definition.compensations:
        if comp.is_local or comp.compensation:
            raise DefinitionError(f"compensation {comp.name!r} must call a provider and cannot itself be undone")
    _check_closing(definition, compensations)


def _check_closing(definition: SagaDefinition, compensations: set[str]) -> None:
    closing = definition.closing
    if closing is None:
        return
    if closing not in compensations or not definition.step(closing).best_effort:
        raise DefinitionError(f"{definition.kind}: closing step {closing!r} must be a best-effort compensation")
    if any(s.compensation == closing for s in definition.steps):
        raise DefinitionError(f"{definition.kind}: closing step {closing!r} cannot also undo a step")


def _check_step(kind: str, step: Step, compensations: set[str]) -> None:
    if step.compensation and step.compensation not in compensations:
        raise DefinitionError(f"{kind}.{step.name}: compensation {step.compensation!r} is not defined")
    if step.provider and step.can_undo and not step.compensation:
        raise DefinitionError(
            f"{kind}.{step.name} changes {step.provider}'s state: give it a compensation or declare can_undo=False"
        )
    if step.retry.max_attempts < 1:
        raise DefinitionError(f"{kind}.{step.name}: max_attempts must be at least 1")
