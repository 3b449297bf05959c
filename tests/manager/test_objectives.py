"""SLOs, early stopping, baselines and Pareto fronts in real studies: the simulated engine
served over HTTP, benchmarked by genai-bench, scheduled by Ray Tune with logical GPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.config import load_study, parse_study
from common.results import FailureReason, TrialStatus
from common.store import Store
from manager.driver import run_study
from manager.paths import StudyPaths
from worker.trial import TrialSpec, run_trial

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def test_a_hard_slo_stops_the_benchmark_early_and_the_baseline_runs_first(
        tmp_path: Path) -> None:
    """Hard p90 TTFT ≤ 1 s at levels 2, 16, 64: with 4 running requests of about 1 s each the
    engine queues 12 of 16 users for seconds, so that trial benchmarks levels 2 and 16 only,
    records the time it saved and succeeds on level 2 (tens of ms). Trial 0 is the baseline:
    the engine's defaults, no searched flag."""
    study = parse_study({
        "name": "early", "model": {"name": MODEL},
        "engine": {"name": "sglang", "simulated": True},
        "search_space": {"max-running-requests": [4]},
        "search": {"algorithm": "grid", "max_concurrent_trials": 2},
        "benchmark": {"scenarios": ["D(128,128)"], "concurrency": [2, 16, 64],
                      "requests_per_level": 16, "seconds_per_level": 60},
        "objective": {"aggregate": "best_level",
                      "slos": [{"metric": "ttft", "statistic": "p90", "max_ms": 1000}]},
        "cluster": {"gpus_per_node": 2, "dashboard": False}})
    outcome = run_study(study, StudyPaths.resolve(study, tmp_path))
    by_number = {t.number: t for t in outcome.trials}
    assert sorted(by_number) == [0, 1]
    baseline, queued = by_number[0], by_number[1]
    assert baseline.baseline and baseline.params == {}
    assert "--max-running-requests" not in baseline.argv
    assert queued.status is TrialStatus.SUCCEEDED, queued.message
    assert [lv.concurrency for lv in queued.levels] == [2, 16]
    assert queued.phase_timings_s["levels_skipped"] == 1
    assert queued.phase_timings_s["early_stop_saved_s"] > 0
    assert queued.slo is not None
    verdicts = {v["concurrency"]: v for v in queued.slo["levels"]}
    assert verdicts[2]["compliant"] and not verdicts[16]["compliant"]
    assert verdicts[16]["violations"]["ttft_p90"] > 0
    assert queued.slo["best_level"] == ["D(128,128)", 2]
    assert queued.objective_value == pytest.approx(queued.levels[0].output_tokens_per_s)


def test_a_trial_with_no_compliant_level_is_slo_violated_with_a_graded_score(
        tmp_path: Path) -> None:
    """TTFT p90 can never be under 1 ms: the trial fails as slo_violated, stores the worst
    violation, and scores above a config that cannot start but below any success."""
    study = parse_study({
        "name": "strict", "model": {"name": MODEL},
        "engine": {"name": "vllm", "simulated": True},
        "search_space": {"max-num-seqs": [8]},
        "benchmark": {"scenarios": ["D(128,16)"], "concurrency": [2],
                      "requests_per_level": 8, "timeouts": {"startup_s": 60}},
        "objective": {"slos": [{"metric": "ttft", "statistic": "p90", "max_ms": 1}]}})
    store = Store.open(f"sqlite:///{tmp_path / 'strict.db'}")
    try:
        store.create_study("strict", study.model_dump(mode="json"))
        spec = TrialSpec(
            study="strict", number=0, trial_id="t0", engine="vllm", simulated=True,
            model=MODEL, served_name=MODEL, tokenizer=None, flags={"max-num-seqs": 8},
            params={"max-num-seqs": 8}, gpu_ids=["0"], node="local", gpu_type="H100",
            benchmark=study.benchmark, objective=study.objective, work_dir=tmp_path / "t0")
        record = run_trial(spec, store)
        stored = store.trials("strict")[0]
    finally:
        store.close()
    assert record.status is TrialStatus.FAILED
    assert record.reason is FailureReason.SLO_VIOLATED, record.message
    assert "ttft_p90" in record.message and record.levels
    assert stored.slo is not None and stored.slo["worst_violation"] > 1
    assert record.score is not None and -1.2 <= record.score < -1.0
    assert stored.objective_values == [record.score]


@pytest.mark.timeout(600)
def test_the_pareto_example_stores_a_non_dominated_front_and_the_cli_prints_it(
        tmp_path: Path) -> None:
    """examples/pareto-sglang-llama8b.yaml, cut to 6 NSGA-II trials: the stored front is
    mutually non-dominated, every other succeeded trial is dominated by a point on it, and
    both `servetune run` and `servetune trials` print it."""
    data = yaml.safe_load((REPO / "examples" / "pareto-sglang-llama8b.yaml").read_text())
    data["search"].update(max_trials=6, max_concurrent_trials=3, population_size=3)
    data["search"]["baseline"] = False
    data["benchmark"].update(scenarios=["D(128,32)"], concurrency=[4, 16],
                             requests_per_level=8)
    data["cluster"].update(gpus_per_node=4, dashboard=False)
    data["search_space"]["tp-size"] = [1, 2]
    study_file = tmp_path / "pareto.yaml"
    study_file.write_text(yaml.safe_dump(data))
    load_study(study_file)
    run = subprocess.run([sys.executable, "-m", "manager.cli", "run", str(study_file)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Pareto front" in run.stdout
    db = f"sqlite:///{tmp_path / 'servetune-results' / 'servetune.db'}"
    store = Store.open(db)
    try:
        info = store.study("pareto-llama8b")
        trials = store.trials("pareto-llama8b")
    finally:
        store.close()
    assert info is not None and info.pareto_front
    done = {t.number: t.objective_values for t in trials
            if t.status is TrialStatus.SUCCEEDED and t.objective_values}
    assert set(info.pareto_front) <= set(done)

    def dominates(a: list[float], b: list[float]) -> bool:  # (max throughput, min TTFT)
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    for i in info.pareto_front:
        assert not any(dominates(done[j], done[i]) for j in info.pareto_front)
    for i in set(done) - set(info.pareto_front):
        assert any(dominates(done[j], done[i]) for j in info.pareto_front)
    listed = subprocess.run([sys.executable, "-m", "manager.cli", "trials", "pareto-llama8b",
                             "--database-url", db], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert f"Pareto front ({len(info.pareto_front)} trials)" in listed.stdout


def test_asha_stops_a_trial_that_falls_behind_at_a_level_and_stores_it_pruned(
        tmp_path: Path) -> None:
    """ASHA over benchmark levels (c=1, 8, 32), one trial at a time, one rung after c=8:
    max-num-seqs=1 falls far behind the trial before it there, so the scheduler stops it; the
    third (128) is far above the rung's median and goes on. The stopped trial is stored as
    pruned with the levels it ran and the score it had, and its engine is gone. The others
    run every level."""
    from tests.manager.test_driver import _processes_labelled

    study = parse_study({
        "name": "asha", "model": {"name": MODEL},
        "engine": {"name": "vllm", "simulated": True},
        "search_space": {"max-num-seqs": [256, 1, 128]},
        "search": {"algorithm": "grid", "max_concurrent_trials": 1, "baseline": False,
                   "scheduler": "asha", "grace_levels": 2, "reduction_factor": 2},
        "benchmark": {"scenarios": ["D(128,32)"], "concurrency": [1, 8, 32],
                      "requests_per_level": 16, "timeouts": {"startup_s": 60}},
        "cluster": {"gpus_per_node": 1, "dashboard": False}})
    outcome = run_study(study, StudyPaths.resolve(study, tmp_path))
    by_seqs = {t.params["max-num-seqs"]: t for t in outcome.trials}
    assert set(by_seqs) == {256, 128, 1}
    for seqs in (256, 128):
        assert by_seqs[seqs].status is TrialStatus.SUCCEEDED, by_seqs[seqs].message
        assert [lv.concurrency for lv in by_seqs[seqs].levels] == [1, 8, 32]
    pruned = by_seqs[1]
    assert pruned.status is TrialStatus.FAILED and pruned.reason is FailureReason.PRUNED, (
        pruned.reason, pruned.message)
    assert [lv.concurrency for lv in pruned.levels] == [1, 8]
    assert pruned.phase_timings_s["levels_skipped"] == 1.0
    assert pruned.score is not None and 0 < pruned.score < min(
        by_seqs[256].score or 0, by_seqs[128].score or 0)
    assert "ASHA" in pruned.message
    assert outcome.best is not None and outcome.best.number != pruned.number
    assert _processes_labelled("asha") == []
