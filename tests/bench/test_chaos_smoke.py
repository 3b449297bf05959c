"""bench/chaos.py end to end in its --quick form: a real multi-node Ray cluster, servetune's
driver, the simulated engine and genai-bench, with a worker node removed and a trial actor
killed mid-sweep. Checks that it prints its four figures, all clean, and exits 0; timings are
never asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(330)
def test_quick_chaos_run_loses_no_result_duplicates_no_row_and_orphans_no_engine() -> None:
    """4 trials on 2 nodes, one node removed (and replaced) and one trial actor killed while
    they run: every trial finishes, no result is lost or stored twice, no engine outlives its
    trial, and the faults injected are printed."""
    done = subprocess.run([sys.executable, "bench/chaos.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=310)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-3000:]
    figures = {label: re.search(rf"^{re.escape(label)}\s+(\S+)", out, re.MULTILINE)
               for label in ("trials finished / planned", "lost results", "duplicate rows",
                             "orphaned engines")}
    assert all(figures.values()), out[-4000:]
    found = {label: match.group(1) for label, match in figures.items() if match}
    assert found == {"trials finished / planned": "4/4", "lost results": "0",
                     "duplicate rows": "0", "orphaned engines": "0"}, out[-4000:]
    assert "(0 after" in out, out[-4000:]  # the second look, after the grace period
    injected = dict(re.findall(r"^  (node removed|trial actor killed)\s+(\d+)$", out,
                               re.MULTILINE))
    assert injected == {"node removed": "1", "trial actor killed": "1"}, out[-4000:]
