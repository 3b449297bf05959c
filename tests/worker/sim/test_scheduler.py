"""Scheduler rules: seats, token budget, chunked prefill, KV admission, preemption, prefix cache,
data-parallel routing, and the virtual-time run that drives them."""

from __future__ import annotations

import dataclasses

import pytest

from common.traffic import TrafficScenario
from worker.sim.engine import SimEngine
from worker.sim.scheduler import ReplicaScheduler, SimRequest
from worker.sim.virtual import VirtualRun, predict

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def engine(*argv: str) -> SimEngine:
    return SimEngine.from_argv(list(argv))


Entries = list[tuple[SimRequest, int]]


def drive(replica: ReplicaScheduler, max_steps: int = 100_000) -> list[Entries]:
    """Run a replica to idle in virtual time; returns every step's entries."""
    steps, now = [], 0.0
    while replica.has_work and len(steps) < max_steps:
        step = replica.schedule()
        assert step is not None, "work left but nothing schedulable"
        steps.append(list(step.entries))
        now += step.duration_s
        replica.finish(step, now)
    return steps


def with_kv_blocks(e: SimEngine, blocks: int) -> ReplicaScheduler:
    """A replica of ``e`` whose KV cache is cut down to ``blocks`` blocks."""
    plan = dataclasses.replace(e.plan, kv_blocks=blocks, kv_tokens=blocks * e.setup.block_size)
    return ReplicaScheduler(e.setup, plan, e.step_model)


@pytest.mark.parametrize("dialect", [
    ["--engine", "vllm", LLAMA_8B, "--max-num-seqs", "4", "--max-num-batched-tokens", "512"],
    ["--engine", "sglang", "--model-path", LLAMA_8B, "--max-running-requests", "4",
     "--chunked-prefill-size", "512"],
])
def test_seats_and_token_budget_are_never_exceeded(dialect: list[str]) -> None:
    """No step runs more than max_running requests or computes more than the token budget,
    and every request ends with exactly max_tokens tokens."""
    replica = engine(*dialect).replicas[0]
    requests = [SimRequest(i, 300 + 37 * i, 20) for i in range(12)]
    for r in requests:
        replica.add(r)
    for entries in drive(replica):
        assert len(entries) <= 4
        assert sum(n for _, n in entries) <= 512
    assert all(r.done and r.num_output == 20 for r in requests)


def test_chunked_prefill_splits_a_long_prompt() -> None:
    """A 5000-token prompt with a 2048-token budget takes ceil(5000/2048) = 3 steps to its
    first token; with chunking disabled (SGLang -1) it is one step."""
    chunked = engine("--engine", "vllm", LLAMA_8B, "--max-num-batched-tokens", "2048",
                     "--max-num-seqs", "8").replicas[0]
    r = SimRequest(0, 5000, 2)
    chunked.add(r)
    steps = drive(chunked)
    assert [n for entries in steps for _, n in entries][:3] == [2048, 2048, 904]
    whole = engine("--engine", "sglang", "--model-path", LLAMA_8B,
                   "--chunked-prefill-size", "-1").replicas[0]
    r2 = SimRequest(1, 5000, 2)
    whole.add(r2)
    assert [n for _, n in drive(whole)[0]] == [5000]


def test_vllm_preempts_when_kv_runs_out_and_still_finishes_everything() -> None:
    """With too few KV blocks for all running requests, vLLM-style preemption (recompute)
    happens, blocks are never over-allocated, and every request completes exactly."""
    replica = with_kv_blocks(engine("--engine", "vllm", LLAMA_8B), 64)  # 1024 tokens
    requests = [SimRequest(i, 100, 200) for i in range(6)]
    for r in requests:
        replica.add(r)
    for _ in drive(replica):
        assert 0 <= replica.kv.free <= replica.kv.num_blocks
    assert replica.preemptions > 0
    assert all(r.done and r.num_output == 200 for r in requests)
    assert replica.kv.available == 64


def test_sglang_reserves_kv_for_expected_output() -> None:
    """SGLang admission keeps room for running requests' expected decode tokens, so it admits
    fewer requests at once than the blocks alone would allow."""
    e = engine("--engine", "sglang", "--model-path", LLAMA_8B)
    replica = with_kv_blocks(e, 128)  # 2048 tokens
    for i in range(8):
        replica.add(SimRequest(i, 200, 1000))
    step = replica.schedule()
    assert step is not None
    admitted = len(step.entries)
    # 200 prompt + 0.7 × 1000 expected output = 900 tokens each: 2 fit, not 8.
    assert admitted == 2


def test_sglang_runs_prefill_batches_before_decoding() -> None:
    """SGLang never mixes: a step is all prefill or all decode, and waiting work goes first."""
    replica = engine("--engine", "sglang", "--model-path", LLAMA_8B).replicas[0]
    replica.add(SimRequest(0, 64, 50))
    drive_steps = []
    for _ in range(5):
        step = replica.schedule()
        assert step is not None
        drive_steps.append(step)
        replica.finish(step, 0.0)
    replica.add(SimRequest(1, 64, 50))
    step = replica.schedule()
    assert step is not None and [r.rid for r, _ in step.entries] == [1]
    for step in drive_steps:
        sizes = {n for _, n in step.entries}
        assert sizes == {1} or 1 not in sizes


def test_prefix_cache_serves_a_repeated_prompt() -> None:
    """A prompt seen before is served from cached blocks (all but the last block recomputed
    at most); with caching disabled nothing is reused."""
    hashes = tuple(range(100, 164))  # 64 full blocks = 1024 tokens
    for flag, expect_hit in (([], True), (["--no-enable-prefix-caching"], False)):
        replica = engine("--engine", "vllm", LLAMA_8B, *flag).replicas[0]
        first = SimRequest(0, 1030, 4, hashes if expect_hit else ())
        replica.add(first)
        drive(replica)
        second = SimRequest(1, 1030, 4, hashes if expect_hit else ())
        replica.add(second)
        steps = drive(replica)
        assert (second.cached_tokens == 1024) is expect_hit
        assert steps[0][0][1] == (6 if expect_hit else 1030)


def test_data_parallel_replicas_share_requests_round_robin() -> None:
    """--dp-size 4: consecutive requests go to replicas 0, 1, 2, 3, 0, ..."""
    e = engine("--engine", "sglang", "--model-path", LLAMA_8B, "--dp-size", "4")
    order = [e.replicas.index(e.route()) for _ in range(8)]
    assert order == [0, 1, 2, 3, 0, 1, 2, 3]


def test_virtual_run_is_deterministic_and_complete() -> None:
    """Same seed → identical metrics; every requested request completes with its tokens."""
    e = engine("--engine", "vllm", LLAMA_8B, "--sim-noise", "0.05", "--sim-seed", "3")
    traffic = TrafficScenario.parse("N(500,100)/(100,30)")
    a = predict(e, traffic, 16, VirtualRun(num_requests=80, seed=1))
    b = predict(e, traffic, 16, VirtualRun(num_requests=80, seed=1))
    assert a == b
    assert a.num_completed == 80 and a.num_errors == 0
    assert 80 < a.mean_output_tokens < 120


def test_throughput_grows_with_concurrency_then_saturates() -> None:
    """Closed loop: more users → more tokens/s and longer latency, with diminishing returns."""
    e = engine("--engine", "vllm", LLAMA_8B)
    traffic = TrafficScenario.parse("D(512,128)")
    levels = {c: predict(e, traffic, c, VirtualRun(num_requests=4 * c)) for c in (1, 8, 64, 512)}
    tput = [levels[c].output_tokens_per_s for c in (1, 8, 64, 512)]
    assert tput == sorted(tput)
    assert levels[512].e2e_latency_ms.mean > levels[1].e2e_latency_ms.mean
    assert tput[3] / tput[2] < tput[1] / tput[0]
