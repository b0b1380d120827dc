"""Property: whatever the interleaving of outcomes, duplicate deliveries and cancels, the orchestrator ends every
saga, never undoes what was not done, undoes everything once when it compensates, and never exceeds attempts."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from saga.orchestrator import (
    BeginCompensation,
    CancelRequested,
    Command,
    Event,
    FinishSaga,
    RunStep,
    SagaState,
    SagaStatus,
    Started,
    StepBlocked,
    StepFailed,
    StepStatus,
    StepSucceeded,
    WaitStep,
    decide,
)
from saga.order_saga import ORDER_SAGA

D = ORDER_SAGA
OPEN = (StepStatus.PENDING, StepStatus.WAITING)
UNDOES = {"cancel_payment": "pay", "cancel_delivery": "ship"}


@dataclass
class Model:
    """An in-memory saga run the way the executor runs it: claim by compare-and-set, outcomes decided by decide()."""

    state: SagaState = field(default_factory=lambda: SagaState(SagaStatus.RUNNING, {}))
    queue: list[str] = field(default_factory=list)
    effects: set[str] = field(default_factory=set)  # provider calls that took effect (idempotent per step)
    in_flight: str | None = None
    cancelled_while_running: bool = False
    ran_after_end: bool = False

    def set(self, name: str, **changes: object) -> None:
        steps = dict(self.state.steps)
        steps[name] = replace(self.state.step(name), **changes)  # type: ignore[arg-type]
        self.state = replace(self.state, steps=steps)

    def handle(self, event: Event, outcome: StepStatus | None = None) -> None:
        commands = decide(D, self.state, event)
        if outcome is not None and hasattr(event, "step"):
            self.set(event.step, status=outcome)
        self.run(commands)

    def run(self, commands: list[Command]) -> None:
        pending = list(commands)
        while pending:
            pending.extend(self.apply(pending.pop(0)))

    def apply(self, command: Command) -> list[Command]:
        if isinstance(command, RunStep):
            if D.step(command.step).is_local:
                following = decide(D, self.state, StepSucceeded(command.step))
                self.set(command.step, status=StepStatus.SUCCEEDED, attempts=1)
                return following
            self.set(command.step, status=StepStatus.PENDING)
            self.queue.append(command.step)
        elif isinstance(command, WaitStep):
            row = self.state.step(command.step)
            self.set(command.step, status=StepStatus.WAITING, attempts=row.attempts - 1,
                     waited_s=row.waited_s + command.delay_s)
            self.queue.append(command.step)
        elif isinstance(command, BeginCompensation):
            for name, row in self.state.steps.items():
                if row.status in OPEN:
                    self.set(name, status=StepStatus.SKIPPED)
            self.state = replace(self.state, status=SagaStatus.COMPENSATING)
        elif isinstance(command, FinishSaga):
            for name, row in self.state.steps.items():
                if row.status in OPEN:
                    self.set(name, status=StepStatus.SKIPPED)
            self.state = replace(self.state, status=command.status)
        return []

    def deliver(self, index: int, duplicate: bool) -> None:
        """A message arrives (maybe again): claim the step if it is open, in its phase, with attempts left."""
        if not self.queue or self.in_flight:
            return
        name = self.queue[index % len(self.queue)]
        if not duplicate:
            self.queue.remove(name)
        row = self.state.step(name)
        phase = SagaStatus.COMPENSATING if D.is_compensation(name) else SagaStatus.RUNNING
        if row.status not in OPEN or self.state.status is not phase or row.attempts >= D.step(name).retry.max_attempts:
            if self.state.status.is_terminal and row.status is StepStatus.RUNNING:
                self.ran_after_end = True
            return
        self.set(name, status=StepStatus.RUNNING, attempts=row.attempts + 1)
        self.in_flight = name

    def finish(self, kind: str) -> None:
        """The step in flight ends: success, an answer lost after the provider acted, a transient or
        permanent failure, or its breaker is open."""
        name, self.in_flight = self.in_flight, None
        if name is None:
            return
        if kind == "permanent" and name in self.effects:
            kind = "ok"  # a provider replays its first answer for the same idempotency key
        if kind in ("ok", "lost"):
            self.effects.add(name)
        if kind == "ok":
            done = StepStatus.COMPENSATED if D.is_compensation(name) else StepStatus.SUCCEEDED
            self.handle(StepSucceeded(name), done)
        elif kind == "blocked":
            self.handle(StepBlocked(name, 60.0))
        else:
            failure = StepFailed(name, kind, permanent=kind == "permanent", jitter=0.5, uncertain=kind == "lost")
            self.handle(failure, StepStatus.FAILED)
            if kind == "lost":
                self.set(name, uncertain=True)

    def cancel(self) -> None:
        if self.state.status is SagaStatus.RUNNING:
            self.cancelled_while_running = True
            self.state = replace(self.state, cancel_requested=True)
            self.handle(CancelRequested())


actions = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("finish"), st.sampled_from(["ok", "ok", "ok", "transient", "permanent", "blocked", "lost"])),
        st.tuples(st.just("cancel")),
    ),
    max_size=60,
)


@settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "400")), deadline=None)
@given(actions)
def test_every_interleaving_ends_consistently(script: list[tuple]) -> None:
    model = Model()
    model.handle(Started())
    for action in script:
        if action[0] == "deliver":
            model.deliver(action[1], action[2])
        elif action[0] == "finish":
            model.finish(action[1])
        else:
            model.cancel()
    drain(model)

    status = model.state.status
    assert status.is_terminal, model.state
    assert not model.ran_after_end
    for name, row in model.state.steps.items():
        assert row.attempts <= D.step(name).retry.max_attempts, (name, row)
        assert not row.status.is_open, (name, row)
    for comp, forward in UNDOES.items():
        assert comp not in model.effects or forward in model.effects  # never undo what was not done
    if status is SagaStatus.COMPENSATED:
        for comp, forward in UNDOES.items():
            assert (comp in model.effects) == (forward in model.effects)  # everything done is undone
    if status is SagaStatus.COMPLETED:
        assert not model.cancelled_while_running
        assert not model.effects & set(UNDOES)
    if status is SagaStatus.FAILED:  # parked for a person: a compensation failed, or an outcome is unknown
        assert any(r.status is StepStatus.FAILED and (D.is_compensation(n) or not D.step(n).best_effort)
                   for n, r in model.state.steps.items())


def drain(model: Model) -> None:
    """Let every remaining message arrive and every step succeed, as a healed system would."""
    for _ in range(200):
        if model.in_flight:
            model.finish("ok")
        elif model.queue:
            model.deliver(0, duplicate=False)
        else:
            return
