"""The trial deadline (``benchmark.timeouts.trial_s``): a trial that hangs at startup, or whose
benchmark runs past the deadline, is torn down then and stored as ``trial_timeout`` (not
retried, with a graded score); the simulated engine really hangs, genai-bench really runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from common.config import parse_study
from common.results import FailureReason, TrialStatus
from common.store import Store
from tests.manager.test_driver import _processes_labelled
from worker.trial import TrialSpec, run_trial

pytestmark = [pytest.mark.integration]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _run(tmp_path: Path, name: str, flags: dict[str, Any], trial_s: float,
         scenario: str = "D(128,16)") -> tuple[Any, float]:
    study = parse_study({
        "name": name, "model": {"name": MODEL}, "engine": {"name": "vllm", "simulated": True},
        "search_space": {"max-num-seqs": [8]},
        "benchmark": {"scenarios": [scenario], "concurrency": [2], "requests_per_level": 400,
                      "timeouts": {"startup_s": 300, "trial_s": trial_s}}})
    store = Store.open(f"sqlite:///{tmp_path / 'deadline.db'}")
    try:
        store.create_study(name, study.model_dump(mode="json"))
        spec = TrialSpec(
            study=name, number=0, trial_id="t0", engine="vllm", simulated=True,
            model=MODEL, served_name=MODEL, tokenizer=None, flags={"max-num-seqs": 8, **flags},
            params={"max-num-seqs": 8}, gpu_ids=["0"], node="local", gpu_type="H100",
            benchmark=study.benchmark, objective=study.objective, work_dir=tmp_path / "t0")
        started = time.monotonic()
        record = run_trial(spec, store)  # returns: a timeout is not an infrastructure error
        wall = time.monotonic() - started
        assert store.trials(name) == [record]
    finally:
        store.close()
    return record, wall


def test_a_trial_that_never_becomes_ready_times_out_at_the_trial_deadline(
        tmp_path: Path) -> None:
    record, wall = _run(tmp_path, "hang-start", {"sim-hang-at-startup": True}, trial_s=4)
    assert record.status is TrialStatus.FAILED
    assert record.reason is FailureReason.TRIAL_TIMEOUT, record.message
    assert "deadline of 4 s" in record.message and "during startup" in record.message
    assert wall < 4 + 30  # the 300 s startup deadline did not apply
    assert record.score is not None and -2.0 <= record.score < -1.0
    assert _processes_labelled("hang-start") == []


def test_a_benchmark_running_past_the_deadline_is_cut_there(tmp_path: Path) -> None:
    """400 requests of 2048 output tokens take minutes; the deadline ends the run early."""
    record, wall = _run(tmp_path, "long-bench", {}, trial_s=25, scenario="D(128,2048)")
    assert record.status is TrialStatus.FAILED
    assert record.reason is FailureReason.TRIAL_TIMEOUT, record.message
    assert "during benchmark" in record.message
    assert record.phase_timings_s["startup_s"] > 0
    assert wall < 25 + 40  # genai-bench's own limit is a minute per level and more
    assert _processes_labelled("long-bench") == []
