"""bench/packing.py end to end in its --quick form: a real two-node Ray cluster, servetune's
driver, the simulated engine and genai-bench. Checks only that it runs and prints its figures;
timings are never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_quick_packing_run_prints_utilisation_overhead_and_the_noop_floor() -> None:
    """One trial of each size (1, 2, 4, 8 GPUs) runs to the end; the script exits 0 and prints
    the per-trial table, GPU-time utilisation, the packing ratio, servetune's overhead per
    trial, the no-op Tune floor and the one-line summary."""
    done = subprocess.run([sys.executable, "bench/packing.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=220)
    out = done.stdout
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = out[out.index("trial GPUs"):]
    rows = [line.split() for line in table.splitlines()[1:5]]
    assert sorted(int(row[1]) for row in rows) == [1, 2, 4, 8], table
    for label in ("GPU-time utilisation", "packing ratio", "overhead per trial",
                  "no-op Tune trial (floor)", "summary: utilisation"):
        assert label in out, out[-3000:]
    assert "4/4 matched" in out, out[-3000:]
    assert "× Tune's no-op floor" in out, out[-3000:]
