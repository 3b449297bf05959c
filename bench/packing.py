"""How well trials of 1, 2, 4 and 8 GPUs pack on two 8-GPU nodes, and what servetune adds to
each trial over Tune's own floor.

Starts a local multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head without GPUs, the
driver's node, and two worker nodes of 8 logical GPUs) under a private temp dir, and runs a grid
study through servetune's own driver (``run_study``): SGLang simulated, ``tp-size`` 1, 2, 4, 8
× ``chunked-prefill-size`` values (``--trials``, rounded up to a multiple of 4), a tiny benchmark
(one level of 8 requests: the point is scheduling), ``--concurrency`` trials at once. Then, on
the same cluster, a no-op Tune run: a trainable that reports once and returns, asking for the
same resources (CPU and GPUs of each servetune trial, in trial order) with the same number of
trials and concurrency, under Tune's default FIFO scheduler.

Printed, per trial and as a summary:

- GPU-time utilisation: busy GPU-seconds / available GPU-seconds, where busy = Σ over trials of
  GPUs × (finished_at − started_at) from the store's trial records, and available = 16 GPUs ×
  (last finished_at − first started_at).
- Held: how long Ray held the trial's GPUs, from its placement group's final bundle placement
  (GCS ``placement_group_final_bundle_placement_timestamp_ms``: the GPUs are reserved for it)
  to its trial actor's death (GCS actor ``end_time``; Tune removes the placement group right
  after). Actors are matched to trials by the pid Tune reports in the trial's result.json.
- Overhead per trial = held − (startup_s + benchmark_s + teardown_s from the record's
  phase_timings_s), split into "before" (placement → record started_at: actor process start,
  imports, Tune's setup, opening the store) and "after" (record finished_at → actor end:
  reporting to Tune, result processing, actor stop) and what is left inside the record.
  The no-op trials' overhead (held, with no engine time) is Tune's floor; servetune's is
  printed as seconds and as a ratio to it.
- Queue: placement group requested → placed (waiting for GPUs: packing, not overhead); each
  second of it is classed by what the other trials' held spans left free at that moment: too
  few GPUs in all, enough in all but on no one node (fragmentation), or a node with room.
- Packing ratio: the ideal makespan lower bound, max(Σ GPUs × record span / 16, longest
  record span), over the measured makespan (first started_at → last finished_at); 1.0 is
  perfect packing. The bound ignores the concurrency cap.

    .venv/bin/python bench/packing.py [--trials 16] [--concurrency 6] [--seed 0] [--quick]

``--search random`` samples the same space (seeded by ``--seed``) instead of the grid, whose
order puts the sizes in blocks (all 1-GPU trials first, all 8-GPU trials last). Timings are
real time on this machine (every engine, genai-bench and Ray worker shares its cores): read
the figures as ratios measured in one run, never as limits.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from local_cluster import local_cluster  # noqa: E402  (bench/, beside this script)
from ray import tune  # noqa: E402
from ray.core.generated import gcs_pb2  # noqa: E402

from common.config import StudyConfig, parse_study  # noqa: E402
from common.results import TrialRecord, latest_attempts  # noqa: E402
from common.store import Store  # noqa: E402
from manager.driver import run_study  # noqa: E402
from manager.paths import StudyPaths  # noqa: E402

NODES = 2
GPUS_PER_NODE = 8
SIZES = [1, 2, 4, 8]
BENCHMARK = {"scenarios": ["D(128,32)"], "concurrency": [4], "requests_per_level": 8,
             "seconds_per_level": 60, "timeouts": {"startup_s": 60}}


@dataclass(frozen=True)
class Span:
    """A trial as Ray saw it (seconds since the epoch): placement group requested and placed,
    actor alive and dead."""

    requested: float
    placed: float
    actor_start: float
    actor_end: float

    @property
    def held_s(self) -> float:
        return self.actor_end - self.placed

    @property
    def queue_s(self) -> float:
        return self.placed - self.requested


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16,
                        help="trials (rounded up to a multiple of 4: one per size per value)")
    parser.add_argument("--concurrency", type=int, default=6, help="max_concurrent_trials")
    parser.add_argument("--seed", type=int, default=0, help="search.seed (--search random)")
    parser.add_argument("--search", choices=["grid", "random"], default="grid")
    parser.add_argument("--quick", action="store_true",
                        help="4 trials (one of each size), all at once: the smoke test")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.concurrency = 4, 4
    trials = len(SIZES) * math.ceil(args.trials / len(SIZES))

    print(f"cluster: head (no GPUs) + {NODES} nodes × {GPUS_PER_NODE} logical GPUs; "
          f"{trials} trials of {'/'.join(map(str, SIZES))} GPUs, {args.concurrency} at once, "
          f"{args.search} search", flush=True)
    with local_cluster("st-pk-", NODES, GPUS_PER_NODE, GPUS_PER_NODE + 2) as (cluster, temp):
        study = _study(cluster.address, trials, args.concurrency, args.seed, args.search)
        paths = StudyPaths.resolve(study, temp / "study")
        started = time.monotonic()
        ray.init(address=cluster.address, log_to_driver=False)
        job = ray.get_runtime_context().get_job_id()
        run_study(study, paths)  # shuts Ray down at its end
        study_wall_s = time.monotonic() - started
        records = _records(paths.database_url, study.name)
        pids = _tune_pids(paths.results_dir / "ray" / study.name)

        ray.init(address=cluster.address, log_to_driver=False)
        spans = _spans(job)
        sizes = [len(r.gpu_ids) for r in records]
        started = time.monotonic()
        noop_job = ray.get_runtime_context().get_job_id()
        noop_pids = _noop_run(sizes, study.cluster.cpus_per_trial, args.concurrency,
                              temp / "noop")
        noop_wall_s = time.monotonic() - started
        noop_spans = _spans(noop_job)
        ray.shutdown()

    print(f"servetune study: {len(records)} trials in {study_wall_s:.1f} s; no-op Tune run: "
          f"{len(noop_pids)} trials in {noop_wall_s:.1f} s\n")
    matched = [(r, spans.get(pids.get(r.trial_id, -1))) for r in records]
    _print_trials(matched)
    noop = [noop_spans[p] for p in noop_pids if p in noop_spans]
    _print_summary(matched, noop)
    return 0


def _study(address: str, trials: int, concurrency: int, seed: int,
           search: str) -> StudyConfig:
    chunks = [2048 + 512 * i for i in range(trials // len(SIZES))]
    return parse_study({
        "name": "packing", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"name": "sglang", "simulated": True},
        "search_space": {"tp-size": SIZES, "chunked-prefill-size": chunks},
        "search": {"algorithm": search, "max_trials": trials, "seed": seed,
                   "max_concurrent_trials": concurrency, "baseline": False},
        "benchmark": BENCHMARK,
        "cluster": {"address": address, "dashboard": False}})


def noop_trial(config: dict[str, Any]) -> None:
    """Tune's floor: a trial that holds its resources, reports once and returns."""
    tune.report({"done_at": time.time()})


def _noop_run(sizes: list[int], cpus: float, concurrency: int, storage: Path) -> list[int]:
    """The same resource requests, in the same order, through a plain Tuner; pids of its
    trials' actors."""
    def resources(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        return tune.PlacementGroupFactory([{"CPU": cpus, "GPU": sizes[config["index"]]}])

    tuner = tune.Tuner(
        tune.with_resources(noop_trial, resources),
        param_space={"index": tune.grid_search(list(range(len(sizes))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name="noop", storage_path=str(storage), verbose=0))
    results = tuner.fit()
    return [int(r.metrics["pid"]) for r in results if r.metrics and "pid" in r.metrics]


def _records(database_url: str, study: str) -> list[TrialRecord]:
    store = Store.open(database_url)
    try:
        done = [r for r in latest_attempts(store.trials(study)) if r.finished_at is not None]
    finally:
        store.close()
    return sorted(done, key=lambda r: r.number)


def _tune_pids(experiment: Path) -> dict[str, int]:
    """Tune trial id → pid of its trainable's process, from each trial's result.json."""
    pids: dict[str, int] = {}
    for path in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines and "pid" in lines[-1]:
            pids[str(lines[-1]["trial_id"])] = int(lines[-1]["pid"])
    return pids


def _spans(job_hex: str) -> dict[int, Span]:
    """pid → Span of each dead actor of a job that ran in a placement group, read from the
    GCS actor and placement group tables (what the dashboard's Actors page shows)."""
    accessor = ray._private.state.state._connect_and_get_accessor()
    job = ray.JobID(bytes.fromhex(job_hex))
    groups = {}
    for raw in accessor.get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
        groups[pg.placement_group_id] = pg
    spans: dict[int, Span] = {}
    for raw in accessor.get_actor_table(job, "DEAD"):
        actor = gcs_pb2.ActorTableData.FromString(raw)
        pg = groups.get(actor.placement_group_id)
        if pg is None or not actor.end_time:
            continue
        placed = pg.placement_group_final_bundle_placement_timestamp_ms or actor.start_time
        requested = pg.placement_group_creation_timestamp_ms or placed
        spans[actor.pid] = Span(requested / 1e3, placed / 1e3, actor.start_time / 1e3,
                                actor.end_time / 1e3)
    return spans


def _classify_wait(record: TrialRecord, queued: Span,
                   spans: list[tuple[TrialRecord, Span]],
                   step_s: float = 0.1) -> tuple[float, float, float]:
    """Seconds of a trial's queue wait (placement group asked → placed) during which the other
    trials' placement groups left (too few GPUs free in all, enough free in all but on no one
    node, a node with room for it), from their nodes and held spans."""
    needed = len(record.gpu_ids)
    nodes = sorted({r.node_id for r, _ in spans})
    nodes += [f"unused-{i}" for i in range(NODES - len(nodes))]
    others = [(r.node_id, len(r.gpu_ids), s) for r, s in spans if s is not queued]
    steps = max(int(queued.queue_s / step_s), 1)
    seconds = [0.0, 0.0, 0.0]
    for i in range(steps):
        t = queued.requested + (i + 0.5) * queued.queue_s / steps
        free = {n: GPUS_PER_NODE - sum(g for node, g, s in others
                                       if node == n and s.placed <= t < s.actor_end)
                for n in nodes}
        kind = (2 if max(free.values()) >= needed else 1 if sum(free.values()) >= needed
                else 0)
        seconds[kind] += queued.queue_s / steps
    return seconds[0], seconds[1], seconds[2]


def _engine_s(record: TrialRecord) -> float:
    t = record.phase_timings_s
    return t.get("startup_s", 0.0) + t.get("benchmark_s", 0.0) + t.get("teardown_s", 0.0)


def _ts(moment: datetime | None) -> float:
    assert moment is not None
    return moment.timestamp()


def _print_trials(matched: list[tuple[TrialRecord, Span | None]]) -> None:
    print(f"{'trial':>5} {'GPUs':>4} {'node':>5} {'status':>9} {'queue':>6} {'held':>6} "
          f"{'record':>6} {'engine':>6} {'overhd':>6} {'before':>6} {'after':>6}")
    nodes = {n: i for i, n in enumerate(sorted({r.node_id for r, _ in matched}))}
    for r, span in matched:
        record_s = _ts(r.finished_at) - _ts(r.started_at)
        cells = [f"{r.number:>5}", f"{len(r.gpu_ids):>4}", f"{nodes[r.node_id]:>5}",
                 f"{r.status.value:>9}"]
        if span is None:
            cells += [f"{'?':>6}"] * 2 + [f"{record_s:>6.1f}", f"{_engine_s(r):>6.1f}"]
            cells += [f"{'?':>6}"] * 3
        else:
            cells += [f"{span.queue_s:>6.1f}", f"{span.held_s:>6.1f}", f"{record_s:>6.1f}",
                      f"{_engine_s(r):>6.1f}", f"{span.held_s - _engine_s(r):>6.1f}",
                      f"{_ts(r.started_at) - span.placed:>6.1f}",
                      f"{span.actor_end - _ts(r.finished_at):>6.1f}"]
        print(" ".join(cells))
    print("  (seconds; held: placement group placed → actor dead; overhd = held − engine "
          "(startup + benchmark + teardown); before/after: outside the record)\n")


def _print_summary(matched: list[tuple[TrialRecord, Span | None]], noop: list[Span]) -> None:
    records = [r for r, _ in matched]
    total_gpus = NODES * GPUS_PER_NODE
    first = min(_ts(r.started_at) for r in records)
    last = max(_ts(r.finished_at) for r in records)
    makespan_s = last - first
    durations = [(len(r.gpu_ids), _ts(r.finished_at) - _ts(r.started_at)) for r in records]
    busy = sum(g * d for g, d in durations)
    utilisation = busy / (total_gpus * makespan_s)
    ideal_s = max(busy / total_gpus, max(d for _, d in durations))
    spans = [(r, s) for r, s in matched if s is not None]
    overheads = [s.held_s - _engine_s(r) for r, s in spans]
    before = [_ts(r.started_at) - s.placed for r, s in spans]
    after = [s.actor_end - _ts(r.finished_at) for r, s in spans]
    inside = [_ts(r.finished_at) - _ts(r.started_at) - _engine_s(r) for r, _ in spans]
    held = sum(len(r.gpu_ids) * s.held_s for r, s in spans)
    floor = [s.held_s for s in noop]
    print(f"GPU-time utilisation      {utilisation:6.1%}  ({busy:.0f} busy GPU-s of "
          f"{total_gpus} × {makespan_s:.1f} s; Ray-held GPU-s {held:.0f})")
    print(f"packing ratio             {ideal_s / makespan_s:6.2f}  (ideal makespan "
          f"{ideal_s:.1f} s / measured {makespan_s:.1f} s)")
    if overheads:
        print(f"overhead per trial        {statistics.mean(overheads):6.2f} s mean, "
              f"{statistics.median(overheads):.2f} median, {max(overheads):.2f} max  "
              f"(before {statistics.mean(before):.2f}, inside {statistics.mean(inside):.2f}, "
              f"after {statistics.mean(after):.2f}; {len(spans)}/{len(records)} matched)")
    if floor:
        print(f"no-op Tune trial (floor)  {statistics.mean(floor):6.2f} s mean, "
              f"{statistics.median(floor):.2f} median, {max(floor):.2f} max  "
              f"({len(floor)} trials, same resources and concurrency)")
    queue = [s.queue_s for _, s in spans]
    if queue:
        by_size = {g: [s.queue_s for r, s in spans if len(r.gpu_ids) == g]
                   for g in sorted({len(r.gpu_ids) for r, _ in spans})}
        print("queue (PG asked → placed) " + ", ".join(
            f"{g} GPU {statistics.mean(q):.1f} s" for g, q in by_size.items()))
        waits = [_classify_wait(r, s, spans) for r, s in spans if s.queue_s > 1.0]
        if waits:
            full, fragmented, fits = (sum(w[i] for w in waits) for i in range(3))
            print(f"queued trials (> 1 s)     {len(waits)}, {full + fragmented + fits:.0f} s in "
                  f"all: {full:.0f} s too few GPUs free, {fragmented:.0f} s enough free but "
                  f"split across nodes (fragmentation), {fits:.0f} s a node had room")
    if overheads and floor:
        ratio = statistics.mean(overheads) / statistics.mean(floor)
        print(f"\nsummary: utilisation {utilisation:.1%}, packing {ideal_s / makespan_s:.2f} "
              f"of ideal, servetune overhead {statistics.mean(overheads):.2f} s/trial = "
              f"{ratio:.1f}× Tune's no-op floor ({statistics.mean(floor):.2f} s)")
    else:
        print(f"\nsummary: utilisation {utilisation:.1%}, packing {ideal_s / makespan_s:.2f} "
              "of ideal, overhead not measured (no actor matched)")


if __name__ == "__main__":
    sys.exit(main())
