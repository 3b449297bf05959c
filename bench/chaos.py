"""A chaos run: worker nodes and trial actors killed at random under a running sweep, and what
the database holds afterwards.

Starts a local multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head without GPUs, the
driver's node, and ``--nodes`` worker nodes of ``--gpus-per-node`` logical GPUs) under a private
temp dir, and runs a grid study through servetune's own driver (``run_study``): SGLang
simulated, ``tp-size`` 1 and 2 × ``chunked-prefill-size`` values (``--trials``, rounded up to
even), a tiny benchmark (one level of 8 requests), no baseline, SQLite in the temp dir,
``cluster.trial_retries`` ``--retries`` and a generous ``cluster.unschedulable_after_s``.

The driver runs in a thread of its own; the chaos loop, on the main thread (adding a node
registers signal handlers), draws from ``random.Random(--seed)`` and acts every
``--fault-interval-s`` (± 50 %, seeded):

- node: removes a worker node hosting a running attempt (the store's ``node_id``) with
  ``Cluster.remove_node(node, allow_graceful=False)``, and adds a replacement node
  ``--replace-after-s`` later so capacity recovers;
- actor: SIGKILLs the process of a live Tune trial actor (class ``ServetuneTrial``, the
  driver's function trainable) of this job, read from the GCS actor table.
  ``ray.util.state.list_actors`` needs the dashboard's API server (the head runs without one
  here), and ``ray.kill`` needs an actor handle only Tune holds; every node is on this
  machine, so the actor's pid is enough.

Faults never push a trial past its retry budget: a trial whose running attempt is already
``--retries`` − 2 is left alone (exhausting the budget is designed behaviour, not a lost
result). ``--quick`` (4 trials at once on 2 nodes, 2 faults: one of each) is the smoke test.

Afterwards every row is read back and printed, with the faults injected:

- trials finished / planned: trials whose last attempt is a result (succeeded, or failed for a
  reason the searcher learns from) over the planned trial numbers 0 .. trials − 1;
- lost results: planned trial numbers with no row, a last attempt still ``running``, or one
  lost to the platform (``node_lost``, ``infra_error``, ``driver_lost``, ``cancelled``,
  ``unschedulable``);
- duplicate rows: succeeded rows beyond the first per trial number, repeated (number,
  attempt), a grid point that succeeded under more than one number, and rows numbered outside
  the plan;
- orphaned engines: live processes carrying the study's label (``SERVETUNE_LABEL_STUDY``),
  checked when the study returns and again after ``--grace-s``;
- misattributed attempts (printed, not gated): attempts a fault hit whose stored reason names
  the other fault (a killed actor stored ``node_lost``, a removed node's attempt left
  ``infra_error``).

The script exits 1 if lost results, duplicate rows or orphaned engines is not 0 (or the driver
raised), 0 otherwise;
timings are printed, never judged. On a failure the temp dir (database, trial logs) is kept.

    .venv/bin/python bench/chaos.py [--trials 40] [--nodes 4] [--gpus-per-node 4] [--seed 0]
                                    [--fault-interval-s 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from local_cluster import local_cluster  # noqa: E402  (bench/, beside this script)
from ray._private import state as ray_state  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from common.config import StudyConfig, parse_study  # noqa: E402
from common.results import (  # noqa: E402
    FailureReason,
    TrialRecord,
    TrialStatus,
    latest_attempts,
    utcnow,
)
from common.store import Store  # noqa: E402
from manager.driver import TRIAL_ACTOR_CLASS, run_study  # noqa: E402
from manager.paths import StudyPaths  # noqa: E402
from worker.launchers.process import LabelledProcess, labelled_processes  # noqa: E402

STUDY = "chaos"
NODE_CPUS = 2
BENCHMARK = {"scenarios": ["D(128,32)"], "concurrency": [4], "requests_per_level": 8,
             "seconds_per_level": 60, "timeouts": {"startup_s": 60}}
TRAINABLE_CLASS = TRIAL_ACTOR_CLASS  # the driver's trainable (Tune's function trainable)
# Failed attempts that are no result: the platform lost them (or the study stopped them).
LOST_REASONS = frozenset({FailureReason.NODE_LOST, FailureReason.INFRA_ERROR,
                          FailureReason.DRIVER_LOST, FailureReason.CANCELLED,
                          FailureReason.UNSCHEDULABLE})
MIN_RUNNING_S = 1.0  # kill mid-trial, not at the instant an attempt starts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="trials (rounded up to even)")
    parser.add_argument("--nodes", type=int, default=4, help="worker nodes")
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=6, help="max_concurrent_trials")
    parser.add_argument("--seed", type=int, default=0, help="the chaos thread's RNG seed")
    parser.add_argument("--fault-interval-s", type=float, default=20.0,
                        help="mean seconds between faults (each drawn ± 50 %%)")
    parser.add_argument("--replace-after-s", type=float, default=3.0,
                        help="seconds before a removed node's replacement is added")
    parser.add_argument("--max-faults", type=int, default=0, help="0: until the study ends")
    parser.add_argument("--retries", type=int, default=6, help="cluster.trial_retries")
    parser.add_argument("--grace-s", type=float, default=5.0,
                        help="seconds before the second look for orphaned engines")
    parser.add_argument("--quick", action="store_true",
                        help="4 trials on 2 nodes, 2 faults (a node and an actor): the smoke test")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.nodes, args.max_faults = 4, 2, 2
        args.fault_interval_s = min(args.fault_interval_s, 3.0)
    trials = 2 * math.ceil(args.trials / 2)

    print(f"cluster: head (no GPUs) + {args.nodes} nodes × {args.gpus_per_node} logical GPUs; "
          f"{trials} trials of 1/2 GPUs, {args.concurrency} at once; chaos seed {args.seed}, "
          f"a fault every ~{args.fault_interval_s:g} s"
          f"{f' (at most {args.max_faults})' if args.max_faults else ''}", flush=True)
    with local_cluster("st-ch-", args.nodes, args.gpus_per_node, NODE_CPUS,
                       remove_temp=False) as (cluster, temp):
        study = _study(cluster.address, trials, args.concurrency, args.retries)
        paths = StudyPaths.resolve(study, temp / "study")
        paths.results_dir.mkdir(parents=True, exist_ok=True)
        ray.init(address=cluster.address, log_to_driver=False)
        chaos = Chaos(cluster, paths.database_url, random.Random(args.seed), args)
        # The driver runs in a thread of its own (Tune supports it): adding a node registers
        # signal handlers, which only the main thread may do, so the chaos loop keeps it.
        driver = Driver(study, paths)
        started = time.monotonic()
        driver.start()
        chaos.run(until=driver.done)
        driver.join()
        study_wall_s = time.monotonic() - started
        crashed, interrupted = driver.crashed, driver.crashed or driver.interrupted
        orphans = labelled_processes(STUDY)
        time.sleep(args.grace_s)
        orphans_later = labelled_processes(STUDY)
        with Store.open(paths.database_url) as store:
            rows = store.trials(STUDY)

    print(f"\nstudy: {study_wall_s:.1f} s, {len(rows)} rows"
          f"{', interrupted' if interrupted else ''}{', the driver crashed' if crashed else ''}")
    bad = _report(rows, trials, chaos, orphans, orphans_later, args.grace_s)
    if bad or crashed:
        print(f"\nkept for inspection: {temp} (database {paths.database_url})")
        return 1
    shutil.rmtree(temp, ignore_errors=True)
    return 0


def _study(address: str, trials: int, concurrency: int, retries: int) -> StudyConfig:
    chunks = [2048 + 256 * i for i in range(trials // 2)]
    return parse_study({
        "name": STUDY, "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "search_space": {"tp-size": [1, 2], "chunked-prefill-size": chunks},
        "search": {"algorithm": "grid", "max_trials": trials,
                   "max_concurrent_trials": concurrency, "baseline": False},
        "benchmark": BENCHMARK,
        "cluster": {"address": address, "dashboard": False, "trial_retries": retries,
                    "unschedulable_after_s": 900}})


class Driver(threading.Thread):
    """``run_study`` in a thread; ``done`` is set when it returns or raises (a crash, printed
    with its traceback: a finding)."""

    def __init__(self, study: StudyConfig, paths: StudyPaths) -> None:
        super().__init__(daemon=True, name="driver")
        self.study, self.paths = study, paths
        self.done = threading.Event()
        self.crashed = self.interrupted = False

    def run(self) -> None:
        try:
            self.interrupted = run_study(self.study, self.paths).interrupted  # ends Ray
        except BaseException:  # noqa: BLE001 - reported by the caller
            self.crashed = True
            print("the driver raised:\n" + traceback.format_exc(), flush=True)
        finally:
            self.done.set()


class Chaos:
    """Injects faults into the running study until ``until`` is set (or ``max_faults``).

    Runs in the driver's process, on the main thread, beside ``run_study``'s thread; it only
    reads the store, and it is the only code adding or removing the cluster's worker nodes."""

    def __init__(self, cluster: Cluster, database_url: str, rng: random.Random,
                 args: argparse.Namespace) -> None:
        self.cluster, self.url, self.rng = cluster, database_url, rng
        self.interval_s, self.replace_after_s = args.fault_interval_s, args.replace_after_s
        self.max_faults, self.retries = args.max_faults, args.retries
        self.gpus_per_node = args.gpus_per_node
        self.job = ray.get_runtime_context().get_job_id()
        self.faults: Counter[str] = Counter()
        self.events: list[str] = []
        # (trial number, attempt) → the fault that hit it, for attempts seen running.
        self.hits: dict[tuple[int, int], str] = {}
        self.started = time.monotonic()
        # Quick runs inject one of each kind; longer ones draw each action.
        self._order = rng.sample(["node", "actor"], 2) if args.max_faults == 2 else []
        self._replacements: list[float] = []

    def run(self, until: threading.Event) -> None:
        store: Store | None = None
        next_at = self.started + self.interval_s * self.rng.uniform(0.5, 1.5)
        while not until.wait(0.5):
            now = time.monotonic()
            self._add_due_replacements(now)
            if now < next_at or (self.max_faults and sum(self.faults.values()) >= self.max_faults):
                continue
            try:
                store = store or Store.open(self.url)
                running = [r for r in store.trials(STUDY) if r.status is TrialStatus.RUNNING]
                kind = self._order[0] if self._order else self.rng.choice(["node", "actor"])
                done = self._inject(kind, running) or (
                    not self._order and self._inject(_other(kind), running))
            except Exception as e:  # noqa: BLE001 - the study may not exist yet, or Ray is
                self._log(f"skipped a fault: {type(e).__name__}: {e}")  # shutting down
                done = False
            if done:
                if self._order:
                    self._order.pop(0)
                next_at = now + self.interval_s * self.rng.uniform(0.5, 1.5)
        if store is not None:
            store.close()

    def _inject(self, kind: str, running: list[TrialRecord]) -> bool:
        return self._kill_node(running) if kind == "node" else self._kill_actor(running)

    def _kill_node(self, running: list[TrialRecord]) -> bool:
        mid = [r for r in running if _running_s(r) >= MIN_RUNNING_S and r.node_id]
        spared = {r.node_id for r in running if r.attempt >= self.retries - 2}
        hosts = {r.node_id for r in mid} - spared
        nodes = sorted((n for n in self.cluster.worker_nodes if n.node_id in hosts),
                       key=lambda n: n.node_id)
        if not nodes:
            return False
        node = self.rng.choice(nodes)
        hit = [r for r in running if r.node_id == node.node_id]
        on_it = sorted(f"{r.number}.{r.attempt}" for r in hit)
        self.cluster.remove_node(node, allow_graceful=False)
        self.hits.update({(r.number, r.attempt): "node removed" for r in hit})
        self.faults["node removed"] += 1
        self._replacements.append(time.monotonic() + self.replace_after_s)
        self._log(f"removed node {node.node_id[:12]} running trial.attempt {', '.join(on_it)}")
        return True

    def _kill_actor(self, running: list[TrialRecord]) -> bool:
        by_parent = _labelled_by_parent(STUDY)
        attempts = {r.number: r for r in running}
        candidates = []
        for actor in ray_state.actors().values():
            if (actor.get("State") != "ALIVE" or actor.get("ActorClassName") != TRAINABLE_CLASS
                    or actor.get("JobID") != self.job or not actor.get("Pid")):
                continue
            pid = int(actor["Pid"])
            trial = by_parent.get(pid)
            record = attempts.get(trial) if trial is not None else None
            if record is not None and (record.attempt >= self.retries - 2
                                       or _running_s(record) < MIN_RUNNING_S):
                continue
            if _is_trial_actor_process(pid):
                candidates.append((pid, trial, record))
        if not candidates:
            return False
        # Mostly mid-trial (an engine running); sometimes any phase: setup, or a trial that
        # just stored its result and is reporting it to Tune.
        mid = [c for c in candidates if c[2] is not None]
        pool = mid if mid and self.rng.random() < 0.75 else candidates
        pid, trial, record = self.rng.choice(sorted(pool, key=lambda c: c[0]))
        os.kill(pid, signal.SIGKILL)
        self.faults["trial actor killed"] += 1
        if record is not None:
            self.hits[(record.number, record.attempt)] = "trial actor killed"
        what = (f"trial.attempt {record.number}.{record.attempt}" if record is not None
                else f"trial {trial}" if trial is not None else "no engine running")
        self._log(f"killed trial actor pid {pid} ({what})")
        return True

    def _add_due_replacements(self, now: float) -> None:
        for due in [d for d in self._replacements if d <= now]:
            self._replacements.remove(due)
            try:
                node = self.cluster.add_node(num_cpus=NODE_CPUS, num_gpus=self.gpus_per_node)
            except Exception as e:  # noqa: BLE001 - reported: capacity stays down
                self._log(f"could not add a replacement node: {type(e).__name__}: {e}")
                continue
            self.faults["replacement node added"] += 1
            self._log(f"added node {node.node_id[:12]}")

    def _log(self, event: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] chaos: {event}"
        self.events.append(line)
        print(line, flush=True)


def _other(kind: str) -> str:
    return "actor" if kind == "node" else "node"


def _running_s(record: TrialRecord) -> float:
    return (utcnow() - record.started_at) / timedelta(seconds=1) if record.started_at else 0.0


def _labelled_by_parent(study: str) -> dict[int, int]:
    """Parent pid (a trial actor) → trial number, from the study's labelled processes."""
    return {p.ppid: int(p.labels["TRIAL"]) for p in labelled_processes(study)
            if p.labels.get("TRIAL", "").isdigit()}


def _is_trial_actor_process(pid: int) -> bool:
    """Guards against a reused pid: the process must still be a Ray worker of ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return TRAINABLE_CLASS.encode() in cmdline or b"ray::" in cmdline


def _report(rows: list[TrialRecord], planned: int, chaos: Chaos,
            orphans: list[LabelledProcess], orphans_later: list[LabelledProcess],
            grace_s: float) -> bool:
    """Prints the figures; True if a lost result, duplicate row or orphaned engine was found."""
    numbers = set(range(planned))
    last = {r.number: r for r in latest_attempts(rows)}
    finished = {n for n, r in last.items() if n in numbers and _is_result(r)}
    lost = sorted(numbers - finished)
    keys = Counter((r.number, r.attempt) for r in rows)
    repeated = sum(c - 1 for c in keys.values() if c > 1)
    succeeded = Counter(r.number for r in rows if r.status is TrialStatus.SUCCEEDED)
    extra_successes = sum(c - 1 for c in succeeded.values() if c > 1)
    points: dict[str, set[int]] = {}
    for r in rows:
        if r.status is TrialStatus.SUCCEEDED:
            points.setdefault(json.dumps(r.params, sort_keys=True), set()).add(r.number)
    same_point = sum(len(ns) - 1 for ns in points.values() if len(ns) > 1)
    outside = sum(1 for r in rows if r.number not in numbers)
    duplicates = repeated + extra_successes + same_point + outside

    print("\nattempts by outcome")
    outcomes = Counter(r.status.value if r.status is not TrialStatus.FAILED
                       else (r.reason.value if r.reason else "failed (no reason)")
                       for r in rows)
    for outcome, count in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {outcome:<24} {count:>4}")
    retried = Counter(len([r for r in rows if r.number == n]) - 1 for n in last)
    print("  trials by retries        " + ", ".join(
        f"{k} retried: {v}" for k, v in sorted(retried.items())))
    print("\nfaults injected")
    for kind in ("node removed", "trial actor killed", "replacement node added"):
        print(f"  {kind:<24} {chaos.faults.get(kind, 0):>4}")

    print(f"\ntrials finished / planned {len(finished):>4}/{planned}")
    print(f"lost results              {len(lost):>4}"
          + (f"  (trials {', '.join(map(str, lost))})" if lost else ""))
    print(f"duplicate rows            {duplicates:>4}"
          + (f"  ({extra_successes} extra succeeded rows, {repeated} repeated (number, attempt),"
             f" {same_point} grid points succeeded twice, {outside} rows outside the plan)"
             if duplicates else ""))
    print(f"orphaned engines          {len(orphans):>4}  ({len(orphans_later)} after "
          f"{grace_s:g} s grace)")
    wrong = _misattributed(rows, chaos.hits)
    print(f"misattributed attempts    {len(wrong):>4}  (of {len(chaos.hits)} attempts hit while "
          "running; reported, not gated)")
    for r, fault in wrong:
        print(f"  trial {r.number} attempt {r.attempt}: hit by '{fault}', stored "
              f"{r.reason.value if r.reason else r.status.value}: {r.message[:240]}")
    suspects = sorted(set(lost) | {n for n, c in succeeded.items() if c > 1}
                      | {r.number for r in rows if r.number not in numbers})
    for number in suspects:
        print(f"\ntrial {number}:")
        for r in (r for r in rows if r.number == number):
            print(f"  attempt {r.attempt} {r.status.value} "
                  f"{r.reason.value if r.reason else ''} node {r.node_id[:12]} "
                  f"{r.started_at} → {r.finished_at}: {r.message[:300]}")
    for p in orphans_later or orphans:
        print(f"orphan pid {p.pid} (parent {p.ppid}, trial {p.labels.get('TRIAL', '?')}): "
              f"{p.cmdline[:160]}")
    return bool(lost or duplicates or orphans or orphans_later)


def _misattributed(rows: list[TrialRecord], hits: dict[tuple[int, int], str]
                   ) -> list[tuple[TrialRecord, str]]:
    """Attempts a fault hit whose stored reason names the other platform fault: a killed
    actor on a live node stored as ``node_lost``, an attempt on a removed node left
    ``infra_error``. (An attempt that ended on its own as the fault landed is not counted.)"""
    expected = {"node removed": FailureReason.NODE_LOST,
                "trial actor killed": FailureReason.INFRA_ERROR}
    by_key = {(r.number, r.attempt): r for r in rows}
    wrong = []
    for key, fault in sorted(hits.items()):
        record = by_key.get(key)
        if (record is not None and record.reason in expected.values()
                and record.reason is not expected[fault]):
            wrong.append((record, fault))
    return wrong


def _is_result(record: TrialRecord) -> bool:
    """A terminal attempt that is the trial's result (what the searcher learns)."""
    if record.status is TrialStatus.SUCCEEDED:
        return True
    return (record.status is TrialStatus.FAILED and record.reason is not None
            and record.reason not in LOST_REASONS)


if __name__ == "__main__":
    sys.exit(main())
