"""The contract tier: Schemathesis generates requests from the OpenAPI document and checks every answer against it
(no 5xx, documented statuses, content types, schemas and headers, 405 with Allow, auth enforced). It prints how many
cases it ran and how long they took."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

TALLY = pytest.StashKey["Tally"]()


@dataclass
class Tally:
    """Cases sent and seconds spent, per run (in-process, HTTP)."""

    cases: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, run: str, cases: int, seconds: float) -> None:
        self.cases[run] = self.cases.get(run, 0) + cases
        self.seconds[run] = self.seconds.get(run, 0.0) + seconds


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TALLY] = Tally()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tally = config.stash.get(TALLY, None)
    if tally is None or not tally.cases:
        return
    terminalreporter.section("Schemathesis")
    for run, cases in tally.cases.items():
        terminalreporter.write_line(f"{run}: {cases} generated cases in {tally.seconds[run]:.1f} s")


@dataclass
class Counter:
    cases: int = 0


@pytest.fixture
def counted(request: pytest.FixtureRequest) -> Iterator[Counter]:
    """Counts the cases of one test item and adds them, with its time, to the run named by the module's RUN."""
    counter = Counter()
    started = time.monotonic()
    yield counter
    request.config.stash[TALLY].add(request.module.RUN, counter.cases, time.monotonic() - started)
