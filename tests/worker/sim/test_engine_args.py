"""Parsing real engines' argv: known flags, defaults, ignored flags and bad values."""

from __future__ import annotations

import pytest

from worker.sim.catalog import find_gpu, find_model
from worker.sim.engine_args import EngineArgsError, parse_engine_argv, resolve, visible_gpu_count


def test_vllm_flags_including_short_aliases_and_positional_model() -> None:
    """`vllm serve MODEL -tp 2 -pp 2 -dp 2 ...` parses to the engine's settings."""
    args, _ = parse_engine_argv([
        "--engine", "vllm", "meta-llama/Llama-3.1-70B-Instruct", "-tp", "2", "-pp", "2",
        "-dp", "2", "--max-num-seqs", "128", "--max-num-batched-tokens", "4096",
        "--gpu-memory-utilization", "0.85", "--kv-cache-dtype", "fp8",
        "--no-enable-prefix-caching", "--block-size", "32", "--max-model-len", "8192",
        "--served-model-name", "llama"])
    assert (args.tp, args.pp, args.dp, args.world_size) == (2, 2, 2, 8)
    assert (args.max_num_seqs, args.max_num_batched_tokens) == (128, 4096)
    assert args.mem_fraction == 0.85 and args.kv_cache_dtype == "fp8"
    assert not args.prefix_caching and args.block_size == 32
    assert args.served_model_name == "llama" and args.ignored_flags == ()


def test_sglang_flags() -> None:
    """`python -m sglang.launch_server --model-path ... --tp-size ...` parses likewise."""
    args, _ = parse_engine_argv([
        "--engine", "sglang", "--model-path", "Qwen/Qwen2.5-7B-Instruct", "--tp-size", "2",
        "--dp-size", "4", "--mem-fraction-static", "0.8", "--max-running-requests", "64",
        "--chunked-prefill-size", "-1", "--schedule-policy", "lpm", "--cuda-graph-max-bs", "32",
        "--disable-radix-cache", "--kv-cache-dtype", "fp8_e5m2"])
    assert (args.tp, args.dp, args.world_size) == (2, 4, 8)
    assert args.chunked_prefill is False and args.schedule_policy == "lpm"
    assert not args.prefix_caching and args.cuda_graph_max_bs == 32


def test_unknown_flags_of_the_real_engine_are_kept_as_ignored() -> None:
    """Flags the simulator does not model are accepted and listed (for one warning line)."""
    args, _ = parse_engine_argv(["--engine", "vllm", "m", "--enforce-eager",
                                 "--swap-space", "4", "-tp", "1"])
    assert args.ignored_flags == ("--enforce-eager", "--swap-space", "4")


@pytest.mark.parametrize("argv,flag", [
    (["--engine", "vllm", "m", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
    (["--engine", "vllm", "m", "-tp", "zero"], "--tensor-parallel-size"),
    (["--engine", "vllm", "m", "--kv-cache-dtype", "int3"], "--kv-cache-dtype"),
    (["--engine", "sglang", "--model-path", "m", "--schedule-policy", "sjf"],
     "--schedule-policy"),
    (["--engine", "sglang", "--model-path", "m", "--chunked-prefill-size", "-5"],
     "--chunked-prefill-size"),
    (["--engine", "trtllm", "m"], "--engine"),
    (["--engine", "vllm", "m", "--sim-noise", "-1"], "--sim-noise"),
])
def test_bad_values_name_the_flag(argv: list[str], flag: str) -> None:
    """A known flag with a bad value is an error whose message names the flag."""
    with pytest.raises(EngineArgsError) as info:
        parse_engine_argv(argv)
    assert flag in str(info.value)


def test_engine_defaults_follow_the_gpu() -> None:
    """Hardware-dependent defaults are the engines' own (vLLM 0.33, SGLang 0.5)."""
    model = find_model("meta-llama/Llama-3.1-8B-Instruct")
    vllm, _ = parse_engine_argv(["--engine", "vllm", "m"])
    sglang, _ = parse_engine_argv(["--engine", "sglang", "--model-path", "m"])
    h100, a100, l40s = find_gpu("H100"), find_gpu("A100"), find_gpu("L40S")
    assert (resolve(vllm, model, h100).token_budget, resolve(vllm, model, h100).max_running) \
        == (8192, 1024)
    assert (resolve(vllm, model, a100).token_budget, resolve(vllm, model, a100).max_running) \
        == (2048, 256)
    assert resolve(vllm, model, h100).mem_fraction == 0.92
    h100_sglang = resolve(sglang, model, h100)
    assert (h100_sglang.token_budget, h100_sglang.cuda_graph_max_bs) == (8192, 256)
    assert 0.8 < h100_sglang.mem_fraction < 0.9
    assert resolve(sglang, model, l40s).token_budget == 4096


def test_vllm_rejects_a_token_budget_below_max_num_seqs() -> None:
    """vLLM's own cross-flag rule: max_num_batched_tokens >= max_num_seqs."""
    args, _ = parse_engine_argv(["--engine", "vllm", "m", "--max-num-batched-tokens", "128",
                                 "--max-num-seqs", "256"])
    with pytest.raises(EngineArgsError, match="max-num-batched-tokens"):
        resolve(args, find_model("Llama-3.1-8B"), find_gpu("H100"))


def test_visible_gpu_count_reads_cuda_visible_devices() -> None:
    """CUDA_VISIBLE_DEVICES lists the GPUs a process sees; unset means all of them."""
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,3,5"}) == 3
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpu_count({}) is None


def test_tensor_parallel_size_must_divide_the_attention_heads() -> None:
    """vLLM/SGLang refuse a tp size that does not divide the heads (e.g. 3 for Llama's 32)."""
    args, _ = parse_engine_argv(["--engine", "vllm", "m", "-tp", "3"])
    with pytest.raises(EngineArgsError, match="divisible by tensor parallel size"):
        resolve(args, find_model("Llama-3.1-8B"), find_gpu("H100"))


def test_vllm_needs_a_model() -> None:
    with pytest.raises(EngineArgsError, match="model is required"):
        parse_engine_argv(["--engine", "vllm", "-tp", "1"])


def test_nvidia_visible_devices_counts_in_a_container() -> None:
    """Without CUDA_VISIBLE_DEVICES, the NVIDIA runtime's NVIDIA_VISIBLE_DEVICES decides."""
    assert visible_gpu_count({"NVIDIA_VISIBLE_DEVICES": "2,5"}) == 2
    assert visible_gpu_count({"NVIDIA_VISIBLE_DEVICES": "all"}) is None
    assert visible_gpu_count({"NVIDIA_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "0,1"}) == 2
