"""Restarts without downtime, on real processes: while clients post orders, the API's gunicorn is reloaded (HUP) and
replaced by a new master (USR2, then TERM to the old one), and each worker gets SIGTERM and is started again. No
request may fail other than a clean 503 (with Retry-After), and every accepted order must reach a terminal state.
Not timed: the figures are bench/zero_downtime.py's."""
from __future__ import annotations

import pytest

from bench.zero_downtime import parse, run

pytestmark = pytest.mark.integration


def test_reloading_and_replacing_the_api_and_restarting_workers_fails_no_request_and_loses_no_order() -> None:
    report = run(parse(["--clients", "8", "--workers", "2", "--threads", "32", "--settle", "2",
                        "--drain-timeout", "60"]))
    kinds = [line.split(" ", 1)[0] for _, line in report["events"] if not line.endswith(": begins")]
    assert kinds == ["HUP", "USR2", "worker", "worker", "load"], report["events"]
    assert report["failed"] == 0, (report["failures"], report["failure_times_s"], report["logs"])
    assert report["orders_accepted"] > 0
    assert report["accepted_orders_missing"] == []
    assert report["orders_not_terminal"] == 0
    assert report["no_order_lost"] and report["ledger_balanced"]
    # the workers drained within their grace: no step was left for the sweeper to take back after its lease
    assert report["sagas_recovered_by_the_sweeper"] == 0
