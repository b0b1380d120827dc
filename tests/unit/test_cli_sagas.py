"""`bookmarket sagas` against the API served over real HTTP (werkzeug in a thread, SQLite, fake providers)."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import parser
from cli.sagas import run
from tests.support import TEST_TOKENS
from tests.unit.engine_fakes import Engine, engine_fixture, served
from tests.unit.test_support import parked_on_pay


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


@pytest.fixture
def url(engine: Engine) -> Iterator[str]:
    yield from served(engine)


def sagas(url: str, *argv: str, answer: str = "y") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = parser().parse_args(["sagas", "--url", url, "--token", TEST_TOKENS["support"], *argv])
    code = run(args, out, err, lambda _: answer)
    return code, out.getvalue(), err.getvalue()


def test_find_show_and_retry_a_parked_saga(url: str, engine: Engine) -> None:
    saga_id = parked_on_pay(engine)
    code, out, _ = sagas(url, "list", "--status", "FAILED")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["id", "kind", "status", "failing_step"]
    assert out.splitlines()[1].split()[:4] == [str(saga_id), "order", "FAILED", "pay"]
    counts = [line.split() for line in sagas(url, "counts")[1].splitlines()]
    assert ["FAILED", "1"] in counts and ["pay", "1"] in counts
    code, out, _ = sagas(url, "show", str(saga_id))
    assert f"saga {saga_id} (order" in out and "FAILED:pay" in out and "actions: retry, skip" in out

    code, out, _ = sagas(url, "retry", str(saga_id), "--reason", "provider confirmed")
    engine.settle()

    assert code == 0 and "retry done (FAILED:pay -> RUNNING)" in out
    audit = sagas(url, "audit", "--saga", str(saga_id))[1]
    assert "retry" in audit and "provider confirmed" in audit and "done" in audit


def test_a_refusal_prints_the_problem_and_exits_1(url: str, engine: Engine) -> None:
    placed = engine.place()
    engine.settle()
    code, _, err = sagas(url, "skip", str(placed.saga_id), "--reason", "nothing failed")
    assert code == 1 and "409 Conflict" in err and "no step of it failed" in err
    code, _, err = sagas("http://127.0.0.1:9", "list")
    assert code == 1 and "cannot reach the API" in err


def test_bulk_shows_the_dry_run_asks_then_runs_in_batches_with_progress(url: str, engine: Engine) -> None:
    ids = [parked_on_pay(engine, customer_id=c) for c in (1, 2, 3)]
    code, out, _ = sagas(url, "bulk", "retry", "--status", "FAILED", "--reason", "provider back", answer="n")
    assert code == 0 and "would touch 3 saga(s)" in out and "nothing done" in out

    code, out, err = sagas(url, "bulk", "retry", "--status", "FAILED", "--reason", "provider back",
                           "--batch-size", "2")
    engine.settle()

    assert code == 0 and "done: 3 touched, 0 skipped" in out
    assert "[##########################..............] 2/3" in err and "] 3/3" in err
    assert all(engine.saga(i).status == "COMPLETED" for i in ids)
    assert "would touch 0 saga(s)" in sagas(url, "bulk", "retry", "--status", "FAILED", "--reason", "again")[1]


def test_without_a_token_it_takes_the_support_token_up_keeps(tmp_path: Path, url: str, engine: Engine) -> None:
    (tmp_path / "api-tokens").write_text(f"storefront=storefront-test-token\nsupport={TEST_TOKENS['support']}\n")
    out, err = io.StringIO(), io.StringIO()
    args = parser().parse_args(["sagas", "--url", url, "--data-dir", str(tmp_path), "counts"])
    assert run(args, out, err) == 0, err.getvalue()
    args = parser().parse_args(["sagas", "--url", url, "--data-dir", str(tmp_path / "none"), "counts"])
    assert run(args, out, err) == 1 and "401" in err.getvalue()
