"""The performance model against hand-computed cases, monotonic properties and the OOM matrix."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.traffic import TrafficScenario
from worker.sim.engine import SimEngine
from worker.sim.virtual import VirtualRun, predict

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"


# Engine time only: no API-server or client overheads.
ENGINE_ONLY = {"ingress_s": 0.0, "egress_s": 0.0, "client_prepare_s": 0.0,
               "client_prepare_per_token_s": 0.0}


def engine(*argv: str) -> SimEngine:
    return SimEngine.from_argv(list(argv))


# Hand computation for Llama-3.1-8B (hidden 4096, 32 layers, 32 heads, 8 KV heads, head_dim 128,
# MLP 14336, vocab 128256, 8,030,261,248 params) on one H100 SXM (989.4 BF16 TFLOPS dense,
# 3350 GB/s HBM), vLLM dialect, with the constants of docs/simulator.md:
# compute efficiency 0.6, memory efficiency 0.8, 25 µs fixed GPU time per layer, eager launch
# 30 µs per layer, CUDA-graph launch 0.15 ms, scheduler 0.6 ms + 3 µs per sequence.
LINEAR_ACTIVE = 32 * (4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336)
LM_HEAD = 128256 * 4096
WEIGHT_BYTES = 8_030_261_248 * 2
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # 131072
PEAK_FLOPS = 989.4e12 * 0.6
BANDWIDTH = 3350e9 * 0.8


def hand_prefill_s(prompt: int) -> float:
    linear = 2 * (LINEAR_ACTIVE * prompt + LM_HEAD * 1)
    attention = 4 * 32 * 32 * 128 * prompt * (prompt + 1) / 2
    compute = (linear + attention) / PEAK_FLOPS
    memory = (WEIGHT_BYTES + prompt * KV_BYTES_PER_TOKEN) / BANDWIDTH
    return max(compute, memory) + 32 * 25e-6 + 32 * 30e-6 + 0.6e-3 + 3e-6


def hand_decode_s(context: int) -> float:
    compute = 2 * (LINEAR_ACTIVE + LM_HEAD) / PEAK_FLOPS
    memory = (WEIGHT_BYTES + (context + 1) * KV_BYTES_PER_TOKEN) / BANDWIDTH
    return max(compute, memory) + 32 * 25e-6 + 0.15e-3 + 0.6e-3 + 3e-6


def test_single_request_ttft_is_the_hand_computed_prefill_time() -> None:
    """One request on an idle engine: TTFT = one prefill step of the whole prompt (±2%)."""
    m = predict(engine("--engine", "vllm", LLAMA_8B), TrafficScenario.parse("D(1024,2)"), 1,
                VirtualRun(num_requests=3, **ENGINE_ONLY))
    expected_ms = hand_prefill_s(1024) * 1e3
    assert m.ttft_ms.mean == pytest.approx(expected_ms, rel=0.02)
    assert 20 < expected_ms < 35  # sanity: an 8B prefill of 1k tokens on an H100


def test_single_request_tpot_is_the_hand_computed_decode_step() -> None:
    """One request: TPOT = a memory-bound decode step (weights + KV read) (±2%)."""
    m = predict(engine("--engine", "vllm", LLAMA_8B), TrafficScenario.parse("D(1024,256)"), 1,
                VirtualRun(num_requests=2, **ENGINE_ONLY))
    expected_ms = hand_decode_s(1024 + 128) * 1e3
    assert m.tpot_ms.mean == pytest.approx(expected_ms, rel=0.02)


@settings(max_examples=40, deadline=None)
@given(low=st.floats(0.5, 0.95), delta=st.floats(0.001, 0.2))
def test_more_memory_fraction_never_means_less_kv_cache(low: float, delta: float) -> None:
    """KV-cache capacity is monotonic in --gpu-memory-utilization / --mem-fraction-static."""
    high = min(low + delta, 0.96)
    for flag, dialect in (("--gpu-memory-utilization", ["--engine", "vllm", LLAMA_8B]),
                          ("--mem-fraction-static",
                           ["--engine", "sglang", "--model-path", LLAMA_8B])):
        small = engine(*dialect, flag, f"{low:.4f}").plan.kv_tokens
        big = engine(*dialect, flag, f"{high:.4f}").plan.kv_tokens
        assert small <= big


@pytest.mark.parametrize("dialect,fp8", [
    (["--engine", "vllm", LLAMA_8B], "fp8"),
    (["--engine", "sglang", "--model-path", LLAMA_8B], "fp8_e4m3"),
])
def test_fp8_kv_cache_holds_twice_the_tokens(dialect: list[str], fp8: str) -> None:
    """An FP8 KV cache halves bytes per token, so the same memory holds ~2× the tokens."""
    bf16 = engine(*dialect).plan.kv_tokens
    eight = engine(*dialect, "--kv-cache-dtype", fp8).plan.kv_tokens
    assert eight / bf16 == pytest.approx(2.0, rel=0.01)


def test_fp8_weights_leave_more_room_for_kv_and_decode_faster() -> None:
    """FP8 weights halve the weight bytes: more KV capacity and a shorter decode step."""
    bf16 = engine("--engine", "vllm", LLAMA_8B)
    fp8 = engine("--engine", "vllm", LLAMA_8B, "--quantization", "fp8")
    assert fp8.plan.weights_gib < 0.6 * bf16.plan.weights_gib
    assert fp8.plan.kv_tokens > bf16.plan.kv_tokens
    traffic = TrafficScenario.parse("D(128,64)")
    fast = predict(fp8, traffic, 1, VirtualRun(num_requests=2))
    slow = predict(bf16, traffic, 1, VirtualRun(num_requests=2))
    assert fast.tpot_ms.mean < 0.7 * slow.tpot_ms.mean


@pytest.mark.parametrize("argv,fits", [
    (["--engine", "vllm", LLAMA_70B], False),
    (["--engine", "sglang", "--model-path", LLAMA_70B], False),
    (["--engine", "vllm", LLAMA_70B, "-tp", "2", "--max-model-len", "8192"], True),
    (["--engine", "sglang", "--model-path", LLAMA_70B, "--tp-size", "2",
      "--mem-fraction-static", "0.9"], True),
    # Fits the weights, but vLLM refuses when one max-length request cannot fit the KV cache.
    (["--engine", "vllm", LLAMA_70B, "-tp", "2"], False),
    (["--engine", "vllm", LLAMA_70B, "-tp", "4"], True),
    # Too little left for activations and CUDA graphs outside SGLang's static pool.
    (["--engine", "sglang", "--model-path", LLAMA_8B, "--mem-fraction-static", "0.995"], False),
    (["--engine", "vllm", LLAMA_8B, "--gpu-memory-utilization", "0.999"], False),
])
def test_oom_matrix(argv: list[str], fits: bool) -> None:
    """Llama-3.1-70B BF16 does not fit one 80 GB GPU and does fit two; edge configs fail."""
    e = engine(*argv)
    assert (e.plan.failure is None) is fits, e.plan.failure
    if not fits:
        assert any(word in e.plan.failure for word in (  # type: ignore[operator]
            "CUDA out of memory", "No available memory for the cache blocks",
            "Not enough memory", "max seq len", "Free memory on device"))


def test_larger_models_start_slower() -> None:
    """Startup: weight loading and graph capture make a 70B start longer than an 8B."""
    small = engine("--engine", "vllm", LLAMA_8B).startup.total_s
    large = engine("--engine", "vllm", LLAMA_70B, "-tp", "4").startup.total_s
    assert large > small * 1.3
    assert 20 < small < 120


def test_token_budget_has_an_interior_optimum() -> None:
    """For a fixed workload, the best --max-num-batched-tokens is not at an edge of the range."""
    traffic = TrafficScenario.parse("D(2048,256)")
    budgets = [512, 2048, 8192, 65536]
    throughput = []
    for budget in budgets:
        e = engine("--engine", "vllm", LLAMA_70B, "-tp", "4", "--max-model-len", "8192",
                   "--max-num-seqs", "256", "--max-num-batched-tokens", str(budget))
        throughput.append(predict(e, traffic, 256, VirtualRun(num_requests=512))
                          .output_tokens_per_s)
    best = throughput.index(max(throughput))
    assert 0 < best < len(budgets) - 1, throughput


def test_tp_dp_tradeoff_depends_on_model_size_and_load() -> None:
    """8 GPUs: light load favours full TP; heavy load favours an interior TP for an 8B model,
    and a 70B model cannot run TP=1 at all and loses most throughput at TP=2 (KV-bound)."""
    traffic = TrafficScenario.parse("D(1024,256)")

    def throughput(model: str, tp: int, concurrency: int, *extra: str) -> float:
        e = engine("--engine", "sglang", "--model-path", model, "--tp-size", str(tp),
                   "--dp-size", str(8 // tp), *extra)
        assert e.plan.failure is None, e.plan.failure
        run = VirtualRun(num_requests=max(3 * concurrency, 32))
        return predict(e, traffic, concurrency, run).output_tokens_per_s

    light = {tp: throughput(LLAMA_8B, tp, 8) for tp in (1, 2, 4, 8)}
    heavy = {tp: throughput(LLAMA_8B, tp, 256) for tp in (1, 2, 4, 8)}
    assert max(light, key=light.__getitem__) == 8
    assert max(heavy, key=heavy.__getitem__) in (2, 4)
    assert engine("--engine", "sglang", "--model-path", LLAMA_70B).failed
    big = {tp: throughput(LLAMA_70B, tp, 256, "--mem-fraction-static", "0.9") for tp in (2, 4)}
    assert big[4] > 1.5 * big[2]
