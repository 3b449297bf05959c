"""Studies on a local multi-node Ray cluster (``ray.cluster_utils.Cluster``, logical GPUs) with
nodes removed under running trials: lost attempts recorded, trials retried elsewhere, capacity
lost for good reported, one terminal row per trial and no engine left running."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from common.config import parse_study
from common.errors import ConfigError
from common.results import FailureReason, TrialStatus, latest_attempts
from common.store import Store
from manager.driver import run_study
from manager.paths import StudyPaths
from tests.manager.test_driver import SMALL_BENCHMARK, _processes_labelled

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A head without GPUs (the driver's node) and worker nodes added by each test, all under
    a private temp dir (Ray's socket paths must stay short; nothing of it lands in /tmp/ray)."""
    temp = Path(tempfile.mkdtemp(prefix="st-cl-", dir="/tmp"))
    (temp / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "temp_dir": str(temp / "ray"),
        "include_dashboard": False})
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def _study(name: str, address: str, tp: int, **sections: Any):  # type: ignore[no-untyped-def]
    return parse_study({
        "name": name, "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "fixed_flags": {"tp-size": tp},
        "search_space": {"chunked-prefill-size": [2048, 4096, 8192]},
        "search": {"algorithm": "grid", "max_concurrent_trials": 2, "baseline": False},
        "benchmark": SMALL_BENCHMARK,
        "cluster": {"address": address, "dashboard": False, **sections}})


class NodeKiller(threading.Thread):
    """Removes the node of the first trial attempt seen running, once."""

    def __init__(self, cluster: Cluster, database_url: str, study: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.url, self.study = cluster, database_url, study
        self.killed: tuple[int, str] | None = None  # (trial number, node id)
        self.stop = threading.Event()

    def run(self) -> None:
        store = None
        while not self.stop.is_set() and self.killed is None:
            time.sleep(0.3)
            try:
                store = store or Store.open(self.url)
                running = [t for t in store.trials(self.study)
                           if t.status is TrialStatus.RUNNING and t.node_id]
            except Exception:  # noqa: BLE001 - the study may not exist yet
                continue
            for record in running:
                node = next((n for n in self.cluster.worker_nodes
                             if n.node_id == record.node_id), None)
                if node is not None:
                    time.sleep(1.0)  # let the engine start: a kill mid-trial, not at launch
                    self.cluster.remove_node(node, allow_graceful=False)
                    self.killed = (record.number, record.node_id)
                    break
        if store is not None:
            store.close()


def _run_with_killer(cluster: Cluster, study: Any, tmp_path: Path) -> tuple[list[Any], Any]:
    paths = StudyPaths.resolve(study, tmp_path)
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    ray.init(address=cluster.address, log_to_driver=False)
    killer = NodeKiller(cluster, paths.database_url, study.name)
    killer.start()
    try:
        outcome = run_study(study, paths)
    finally:
        killer.stop.set()
        killer.join(timeout=10)
    store = Store.open(paths.database_url)
    try:
        rows = store.trials(study.name)
    finally:
        store.close()
    assert killer.killed is not None, "no trial was seen running"
    return rows, (outcome, killer.killed)


def test_a_node_lost_mid_trial_is_recorded_and_the_trial_finishes_on_another(
        cluster: Cluster, tmp_path: Path) -> None:
    """3 nodes × 4 GPUs, trials of 4 GPUs, 2 at once: the node of a running trial is removed;
    that attempt is stored as node_lost, the trial runs again on another node as attempt 1 and
    succeeds, every trial has exactly one finished row and no engine process is left."""
    for _ in range(3):
        cluster.add_node(num_cpus=2, num_gpus=4)
    cluster.wait_for_nodes()
    study = _study("node-lost", cluster.address, tp=4)
    rows, (outcome, (number, lost_node)) = _run_with_killer(cluster, study, tmp_path)

    finals = latest_attempts(rows)
    assert [t.number for t in finals] == [0, 1, 2]
    assert all(t.status is TrialStatus.SUCCEEDED for t in finals), [
        (t.number, t.attempt, t.reason, t.message) for t in rows]
    assert [t.number for t in outcome.trials] == [0, 1, 2]
    history = [t for t in rows if t.number == number]
    assert [t.attempt for t in history] == [0, 1]
    lost, retried = history
    assert lost.status is TrialStatus.FAILED and lost.reason is FailureReason.NODE_LOST
    assert lost.node_id == lost_node and lost.finished_at is not None
    assert retried.status is TrialStatus.SUCCEEDED and retried.node_id != lost_node
    assert len(retried.gpu_ids) == 4
    # Exactly one finished (succeeded) row per trial, and nothing left running.
    succeeded = [t.number for t in rows if t.status is TrialStatus.SUCCEEDED]
    assert sorted(succeeded) == [0, 1, 2]
    assert not [t for t in rows if t.status is TrialStatus.RUNNING]
    assert _processes_labelled("node-lost") == []


def test_capacity_lost_for_good_ends_pending_trials_as_unschedulable(
        cluster: Cluster, tmp_path: Path) -> None:
    """The only 8-GPU node is removed while a trial of 8 GPUs runs there: the lost attempt is
    node_lost, and the trial's retry and the trials not yet started, which no live node (4 GPUs)
    can hold, fail as unschedulable after the bounded wait; the study ends."""
    cluster.add_node(num_cpus=2, num_gpus=8)
    cluster.add_node(num_cpus=2, num_gpus=4)
    cluster.wait_for_nodes()
    study = _study("capacity-lost", cluster.address, tp=8, unschedulable_after_s=3)
    started = time.monotonic()
    rows, (outcome, (number, _)) = _run_with_killer(cluster, study, tmp_path)
    assert time.monotonic() - started < 240

    lost = [t for t in rows if t.reason is FailureReason.NODE_LOST]
    assert [t.number for t in lost] == [number]
    finals = latest_attempts(rows)
    assert [t.number for t in finals] == [0, 1, 2]
    unschedulable = [t for t in finals if t.reason is FailureReason.UNSCHEDULABLE]
    assert unschedulable == finals, [(t.number, t.attempt, t.reason) for t in rows]
    for t in unschedulable:
        assert "needs 8 GPUs on one node" in t.message and "largest live node has 4" in t.message
        assert t.params  # the config it would have run
    assert not [t for t in rows if t.status is TrialStatus.RUNNING]
    assert outcome.best is None or outcome.best.number != number
    assert _processes_labelled("capacity-lost") == []


def test_a_layout_larger_than_every_node_is_rejected_before_any_trial(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_node(num_cpus=2, num_gpus=4)
    cluster.add_node(num_cpus=2, num_gpus=4)
    cluster.wait_for_nodes()
    study = _study("too-large", cluster.address, tp=8)
    ray.init(address=cluster.address, log_to_driver=False)
    with pytest.raises(ConfigError, match=r"largest node \(4 GPUs\).*needs 8 GPUs"):
        run_study(study, StudyPaths.resolve(study, tmp_path))
