"""End-to-end studies on a local Ray instance with fake GPUs, the simulated engine and real
genai-bench: GPU isolation, concurrency, pre-flight rejection, failed trials as data."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray

from common.config import parse_study
from common.errors import ConfigError
from common.results import FailureReason, TrialStatus
from common.store import Store
from manager.driver import TRIAL_ACTOR_CLASS, run_study
from manager.paths import StudyPaths
from worker.launchers.process import labelled_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
SMALL_BENCHMARK = {"scenarios": ["D(128,32)"], "concurrency": [4], "requests_per_level": 8,
                   "seconds_per_level": 60, "timeouts": {"startup_s": 60}}


def small_study(name: str, space: dict, **sections: object):  # type: ignore[no-untyped-def]
    return parse_study({
        "name": name, "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True}, "search_space": space,
        "benchmark": SMALL_BENCHMARK,
        "cluster": {"gpus_per_node": 8, "dashboard": False}, **sections})


def test_concurrent_trials_of_1_2_and_4_gpus_never_share_a_gpu(tmp_path: Path) -> None:
    """TPE study on one fake 8-GPU node: several trials run at once (Ray + Optuna really run
    concurrently), each gets exactly tp × dp GPUs, and overlapping trials hold disjoint ids."""
    study = small_study("isolation", {"tp-size": [1, 2, 4], "dp-size": [1],
                                      "chunked-prefill-size": [2048, 4096, 8192]},
                        search={"algorithm": "tpe", "max_trials": 8,
                                "max_concurrent_trials": 4, "startup_trials": 8,
                                "baseline": False})
    watcher = _ActorWatcher()
    watcher.start()
    try:
        outcome = run_study(study, StudyPaths.resolve(study, tmp_path))
    finally:
        watcher.stop.set()
        watcher.join()
    trials = outcome.trials
    assert len(trials) == 8
    # The trial actors are named after their trials in the dashboard (their repr name).
    assert watcher.seen and watcher.seen <= {(TRIAL_ACTOR_CLASS, f"isolation-{t.number:04d}")
                                             for t in trials}, watcher.seen
    assert all(t.status is TrialStatus.SUCCEEDED for t in trials), [t.message for t in trials]
    for t in trials:
        assert len(t.gpu_ids) == t.params["tp-size"]
        assert t.argv and t.levels and t.phase_timings_s["startup_s"] > 0
    overlapping = 0
    for a, b in itertools.combinations(trials, 2):
        assert a.finished_at and b.finished_at
        if a.started_at < b.finished_at and b.started_at < a.finished_at:
            overlapping += 1
            assert not set(a.gpu_ids) & set(b.gpu_ids), (a.number, a.gpu_ids, b.number,
                                                         b.gpu_ids)
    assert overlapping >= 3
    assert not ray.is_initialized()


class _ActorWatcher(threading.Thread):
    """Collects (class name, repr name) of the live actors of the Ray instance this process
    runs, from the GCS actor table (the study runs without a dashboard, so no state API)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.seen: set[tuple[str, str]] = set()

    def run(self) -> None:
        from ray._private import state as ray_state
        from ray.core.generated import gcs_pb2

        while not self.stop.wait(0.5):
            accessor = getattr(ray_state.state, "_global_state_accessor", None)
            if not ray.is_initialized() or accessor is None:
                continue
            try:
                table = accessor.get_actor_table(None, None)
            except Exception:  # noqa: BLE001 - Ray starting or shutting down
                continue
            for raw in table:
                actor = gcs_pb2.ActorTableData.FromString(raw)
                if actor.state == gcs_pb2.ActorTableData.ALIVE and actor.repr_name:
                    self.seen.add((actor.class_name, actor.repr_name))


def test_infeasible_study_is_rejected_before_ray_starts(tmp_path: Path) -> None:
    """A config needing more GPUs than the largest node is a ConfigError naming the layout
    and the limit, raised before Ray (or any engine) starts."""
    study = small_study("too-big", {"tp-size": [16]})
    with pytest.raises(ConfigError) as info:
        run_study(study, StudyPaths.resolve(study, tmp_path))
    assert "tp-size=16" in str(info.value) and "8 GPUs" in str(info.value)
    assert not ray.is_initialized()


def test_engine_oom_at_startup_is_stored_as_infeasible_and_the_study_goes_on(
        tmp_path: Path) -> None:
    """Llama-3.1-70B on one GPU runs out of memory at startup: that trial is stored failed
    with reason infeasible_config and the engine's log tail; the 4-GPU trial succeeds."""
    study = parse_study({
        "name": "oom", "model": {"name": "meta-llama/Llama-3.1-70B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "search_space": {"tp-size": [1, 4]}, "fixed_flags": {"mem-fraction-static": 0.88},
        "search": {"algorithm": "grid", "max_concurrent_trials": 2, "baseline": False},
        "benchmark": SMALL_BENCHMARK, "cluster": {"gpus_per_node": 8, "dashboard": False}})
    paths = StudyPaths.resolve(study, tmp_path)
    outcome = run_study(study, paths)
    by_tp = {t.params["tp-size"]: t for t in outcome.trials}
    failed, ok = by_tp[1], by_tp[4]
    assert failed.status is TrialStatus.FAILED
    assert failed.reason is FailureReason.INFEASIBLE_CONFIG
    assert "CUDA out of memory" in failed.log_excerpt
    assert failed.score is not None and failed.score < 0
    assert ok.status is TrialStatus.SUCCEEDED and ok.score and ok.score > 0
    store = Store.open(paths.database_url)
    try:
        info = store.study("oom")
        assert info is not None and info.best_trial_number == ok.number
    finally:
        store.close()


def test_cli_run_prints_the_winner_and_trials_lists_the_database(tmp_path: Path) -> None:
    """`servetune run` ends with the best trial, its gain over the baseline (trial 0, the
    engine's defaults) and its native launch command; `servetune trials` reads the same
    study back from the database, the baseline marked."""
    study_file = tmp_path / "cli.yaml"
    study_file.write_text(
        "name: cli\nmodel: {name: meta-llama/Llama-3.1-8B-Instruct}\n"
        "engine: {name: vllm, simulated: true}\n"
        "search_space: {max-num-seqs: [32, 64]}\n"
        "search: {algorithm: grid}\n"
        "benchmark: {scenarios: ['D(128,32)'], concurrency: [4], requests_per_level: 8}\n"
        "cluster: {gpus_per_node: 2, dashboard: false}\n")
    run = subprocess.run([sys.executable, "-m", "manager.cli", "run", str(study_file)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "launch it with:" in run.stdout and "vllm serve" in run.stdout
    assert "gain over the baseline (trial 0, engine defaults): " in run.stdout
    db = f"sqlite:///{tmp_path / 'servetune-results' / 'servetune.db'}"
    listed = subprocess.run([sys.executable, "-m", "manager.cli", "trials", "cli",
                             "--database-url", db], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("succeeded") == 3
    assert "   0* succeeded" in listed.stdout


def _processes_labelled(study: str) -> list[int]:
    """Pids of live processes whose environment carries the launcher's study label."""
    return [p.pid for p in labelled_processes(study)]


def test_ctrl_c_tears_trials_down_and_records_them_cancelled(tmp_path: Path) -> None:
    """SIGINT during a study: exit 1, every trial ends in the database (running ones as
    cancelled), and no engine process of the study is left running."""
    import signal
    import time

    study_file = tmp_path / "ctrlc.yaml"
    study_file.write_text(
        "name: ctrlc-test\nmodel: {name: meta-llama/Llama-3.1-8B-Instruct}\n"
        "engine: {name: vllm, simulated: true}\n"
        "search_space: {max-num-seqs: [32, 64, 128]}\n"
        "search: {algorithm: grid, max_concurrent_trials: 2}\n"
        "benchmark: {scenarios: ['D(128,2048)'], concurrency: [4], requests_per_level: 40}\n"
        "cluster: {gpus_per_node: 2, dashboard: false}\n")
    proc = subprocess.Popen([sys.executable, "-m", "manager.cli", "run", str(study_file)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_processes_labelled("ctrlc-test")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_labelled("ctrlc-test"), "no engine started"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, output
    assert "interrupted" in output
    assert _processes_labelled("ctrlc-test") == []
    store = Store.open(f"sqlite:///{tmp_path / 'servetune-results' / 'servetune.db'}")
    try:
        trials = store.trials("ctrlc-test")
    finally:
        store.close()
    assert trials and all(t.status is not TrialStatus.RUNNING for t in trials)
    assert any(t.reason is FailureReason.CANCELLED for t in trials)


def test_a_study_by_intent_stores_each_trials_sections_and_native_argv(tmp_path: Path) -> None:
    """parallel/quantization sections end to end: the mapped flags reach the (simulated)
    engine, and every trial keeps its section values beside the exact argv it ran."""
    study = parse_study({
        "name": "intent", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "vllm", "simulated": True},
        "parallel": {"tp": [1, 2]}, "quantization": "kv-cache-fp8",
        "search": {"algorithm": "grid", "baseline": False, "max_concurrent_trials": 2},
        "benchmark": SMALL_BENCHMARK, "cluster": {"gpus_per_node": 2, "dashboard": False}})
    outcome = run_study(study, StudyPaths.resolve(study, tmp_path))
    trials = sorted(outcome.trials, key=lambda t: t.intent["parallel.tp"])
    assert [t.status for t in trials] == [TrialStatus.SUCCEEDED] * 2, [t.message for t in trials]
    for trial, tp in zip(trials, [1, 2], strict=True):
        assert trial.intent == {"parallel.tp": tp, "quantization.preset": "kv-cache-fp8",
                                "quantization.kv_cache": "fp8"}
        assert len(trial.gpu_ids) == tp
        argv = trial.argv
        assert argv[argv.index("--tensor-parallel-size") + 1] == str(tp)
        assert argv[argv.index("--kv-cache-dtype") + 1] == "fp8"
