"""WORKER_NICE: a worker process lowers its own CPU priority, so a saturated machine answers the API first."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("nice", "lowered_by"), [(0, 0), (3, 3)])
def test_a_worker_lowers_its_cpu_priority_by_worker_nice(nice: int, lowered_by: int) -> None:
    code = (f"import os; from workers.app import lower_priority; before = os.nice(0); lower_priority({nice}); "
            "print(os.nice(0) - before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == str(lowered_by)
