"""Trial metrics through Ray's metrics API: exported by a real local Ray from a trial-like
actor and read back from the node's Prometheus endpoint under the names users query; and a
no-op without Ray."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.benchmark import LevelMetrics, RequestRecord, summarize
from common.results import FailureReason, TrialRecord, TrialStatus
from tests.conftest import free_port
from worker.metrics import PHASES, TrialMetrics, ray_connected

SCRAPE_TIMEOUT_S = 60.0  # Ray exports every second here (below); a loaded machine is slower


def level(concurrency: int, scale: float = 1.0) -> LevelMetrics:
    """A real level summary of four requests (10 output tokens each) at ``concurrency``."""
    records = [RequestRecord(start_s=0.0, first_token_s=0.05 * scale * (i + 1),
                             end_s=0.05 * scale * (i + 1) + 0.09 * scale, input_tokens=100,
                             output_tokens=10) for i in range(4)]
    return summarize("D(100,10)", concurrency, records)


def test_without_ray_every_method_is_a_no_op() -> None:
    """Outside Ray (a direct run_trial call) TrialMetrics exports nothing and never fails;
    disabled() never exports; an unknown phase is a caller bug either way."""
    assert not ray_connected()
    metrics = TrialMetrics("s", 3, 0, gpus=2, engine="vllm")
    assert not metrics.enabled
    for phase in PHASES:
        metrics.phase(phase)
    metrics.level(level(4))
    metrics.finished(TrialRecord(study="s", number=3, status=TrialStatus.SUCCEEDED, score=1.0))
    assert not TrialMetrics.disabled().enabled
    with pytest.raises(ValueError, match="unknown trial phase 'warmup'.*pull, startup"):
        metrics.phase("warmup")


@pytest.fixture
def local_ray() -> Iterator[int]:
    """A one-CPU local Ray exporting metrics every second on a free port; yields the port."""
    import ray

    temp = tempfile.mkdtemp(prefix="st-mx-", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    try:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 _temp_dir=temp, _metrics_export_port=port,
                 _system_config={"metrics_report_interval_ms": 1000})
        yield port
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _trial_actor() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Trial:
        """Stands in for the Tune trial actor: one process running trials one after another."""

        def run(self, study: str, number: int, levels: list[LevelMetrics],
                record: TrialRecord) -> bool:
            metrics = TrialMetrics(study, number, record.attempt, gpus=2, engine="vllm")
            for phase in ("pull", "startup", "benchmark"):
                metrics.phase(phase)
            for lv in levels:
                metrics.level(lv)
            metrics.phase("teardown")
            metrics.finished(record)
            metrics.finished(record)  # counted once
            return metrics.enabled

    return Trial.remote()


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """servetune samples from the node's Prometheus endpoint: (name, our labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    ours = {"study", "trial", "attempt", "engine", "gpus", "phase", "scenario", "concurrency",
            "status", "reason"}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_servetune_"):
                labels = frozenset((k, v) for k, v in sample.labels.items() if k in ours)
                samples[(sample.name, labels)] = sample.value
    return samples


def _values(samples: dict[Any, float], expected: dict[Any, float]) -> dict[Any, float]:
    return {k: samples[k] for k in expected}


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.mark.integration
def test_trial_metrics_reach_prometheus_with_their_tags(local_ray: int) -> None:
    """Two trials in one actor process (as Tune reuses actors): every gauge and the finished
    counter are in the node's Prometheus output under ``ray_servetune_*``, tagged with study,
    trial, attempt, engine and gpus (levels with scenario and concurrency), with the values
    recorded; the current phase is 1 and the others 0; finished() twice counts once."""
    import ray

    low, high = level(1), level(8, scale=3.0)
    ok = TrialRecord(study="mx", number=1, status=TrialStatus.SUCCEEDED, score=1234.5)
    oom = TrialRecord(study="mx", number=2, attempt=1, status=TrialStatus.FAILED,
                      reason=FailureReason.INFEASIBLE_CONFIG, score=-3.0)
    actor = _trial_actor()
    assert ray.get(actor.run.remote("mx", 1, [low, high], ok)) is True
    assert ray.get(actor.run.remote("mx", 2, [], oom)) is True

    trial = {"study": "mx", "trial": "1", "attempt": "0", "engine": "vllm", "gpus": "2"}
    failed = {**trial, "trial": "2", "attempt": "1"}
    expected = {
        _key("ray_servetune_trial_gpus", **trial): 2.0,
        _key("ray_servetune_trial_gpus", **failed): 2.0,
        _key("ray_servetune_trial_score", **trial): 1234.5,
        _key("ray_servetune_trial_score", **failed): -3.0,
        _key("ray_servetune_trials_finished_total", study="mx", status="succeeded",
             reason=""): 1.0,
        _key("ray_servetune_trials_finished_total", study="mx", status="failed",
             reason="infeasible_config"): 1.0,
    }
    for tags in (trial, failed):
        for phase in PHASES:
            expected[_key("ray_servetune_trial_phase", **tags, phase=phase)] = (
                1.0 if phase == "done" else 0.0)
    for lv in (low, high):
        tags = {**trial, "scenario": "D(100,10)", "concurrency": str(lv.concurrency)}
        expected[_key("ray_servetune_level_output_tokens_per_s", **tags)] = (
            lv.output_tokens_per_s)
        expected[_key("ray_servetune_level_ttft_p90_ms", **tags)] = lv.ttft_ms.p90
        expected[_key("ray_servetune_level_tpot_p90_ms", **tags)] = lv.tpot_ms.p90

    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    while time.monotonic() < deadline:
        try:
            samples = _scrape(local_ray)
        except httpx.TransportError:  # the metrics agent is still starting
            samples = {}
        # Until every value is in: an export can land between two of the actor's writes.
        if expected.keys() <= samples.keys() and _values(samples, expected) == pytest.approx(
                expected):
            break
        time.sleep(0.5)
    missing = sorted(str(k) for k in expected.keys() - samples.keys())
    assert not missing, f"not exported in {SCRAPE_TIMEOUT_S:g} s: {missing}; got {samples}"
    assert _values(samples, expected) == pytest.approx(expected)
    assert high.ttft_ms.p90 > low.ttft_ms.p90 > 0  # the two levels are told apart
