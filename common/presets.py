"""Named presets of the study's ``parallel`` and ``quantization`` sections.

A preset is a set of runtime-agnostic section fields (``tp``, ``dp``, ``kv_cache``, ...), the
same for every engine except where an engine lacks a dimension; ``common.intent`` maps them to
each engine's native flags like fields the study gives itself (fields given next to a preset
override the preset's). Parallel presets that depend on the GPU budget derive their sizes from
``cluster.gpus_per_node`` (powers of two up to it); layouts of more GPUs than that, or that
break an engine constraint, are pruned before any trial runs (``common.constraints``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

ParallelPreset = Literal["single-gpu", "high-throughput", "large-model-tp", "large-model-tp-pp",
                         "moe-optimized", "long-context", "balanced"]
QuantizationPreset = Literal["default", "kv-cache-fp8", "dynamic-fp8", "bf16-stable",
                             "aggressive-moe"]

Fields = dict[str, Any]


def powers_of_two(low: int, high: int) -> list[int]:
    """1, 2, 4, ... from ``low`` to ``high`` inclusive (``[low]`` when high < low)."""
    values = [1 << k for k in range(0, 16) if low <= (1 << k) <= high]
    return values or [max(1, low)]


def _single_gpu(engine: str, gpus: int) -> Fields:
    return {"tp": 1, "pp": 1}


def _high_throughput(engine: str, gpus: int) -> Fields:
    return {"tp": 1, "dp": powers_of_two(1, gpus)}


def _large_model_tp(engine: str, gpus: int) -> Fields:
    return {"tp": powers_of_two(min(2, gpus), gpus), "pp": 1}


def _large_model_tp_pp(engine: str, gpus: int) -> Fields:
    return {"tp": powers_of_two(1, max(1, gpus // 2)), "pp": powers_of_two(min(2, gpus), gpus)}


def _moe_optimized(engine: str, gpus: int) -> Fields:
    if engine == "sglang":  # DP attention inside one TP group, experts over all of its GPUs
        return {"tp": gpus, "attn_dp": powers_of_two(1, gpus), "ep": True}
    if engine == "trtllm":
        return {"tp": powers_of_two(1, gpus), "ep": True}
    return {"tp": powers_of_two(1, gpus), "dp": powers_of_two(1, gpus), "ep": True}


def _long_context(engine: str, gpus: int) -> Fields:
    if engine == "vllm":
        return {"tp": powers_of_two(1, gpus), "dcp": powers_of_two(1, gpus)}
    if engine == "trtllm":
        return {"tp": powers_of_two(1, gpus), "cp": powers_of_two(1, min(2, gpus))}
    return {"tp": powers_of_two(1, gpus), "cp": powers_of_two(1, gpus)}


def _balanced(engine: str, gpus: int) -> Fields:
    if engine == "trtllm":
        return {"tp": powers_of_two(1, gpus), "pp": powers_of_two(1, min(2, gpus))}
    return {"tp": powers_of_two(1, gpus), "dp": powers_of_two(1, gpus)}


PARALLEL_PRESETS: dict[str, tuple[str, Callable[[str, int], Fields]]] = {
    "single-gpu": ("one GPU: tp 1, pp 1", _single_gpu),
    "high-throughput": ("data-parallel replicas of one GPU each: dp 1, 2, ... up to the node "
                        "(engines without data parallelism refuse it)", _high_throughput),
    "large-model-tp": ("tensor parallelism over 2, 4, ... up to the node's GPUs",
                       _large_model_tp),
    "large-model-tp-pp": ("tensor × pipeline parallelism: tp up to half the node, pp 2 and up",
                          _large_model_tp_pp),
    "moe-optimized": ("expert parallelism: vLLM tp × dp with --enable-expert-parallel; SGLang "
                      "tp = the node with attention-DP groups and ep = tp; TensorRT-LLM "
                      "ep = tp", _moe_optimized),
    "long-context": ("context parallelism: vLLM decode-context parallel (dcp) over the tp "
                     "GPUs; SGLang attention context parallel (attn-cp-size); TensorRT-LLM "
                     "cp 1-2", _long_context),
    "balanced": ("tp × dp (TensorRT-LLM: tp × pp) layouts of up to the node's GPUs",
                 _balanced),
}

QUANTIZATION_PRESETS: dict[str, tuple[str, Fields]] = {
    "default": ("the engine's and checkpoint's defaults (no flag)", {}),
    "kv-cache-fp8": ("FP8 KV cache: about twice the KV-cache tokens", {"kv_cache": "fp8"}),
    "dynamic-fp8": ("weights quantized to FP8 at load time (left out for a checkpoint that is "
                    "already quantized)", {"weights": "fp8"}),
    "bf16-stable": ("bfloat16 weights and activations, KV cache in the model dtype",
                    {"dtype": "bf16", "kv_cache": "auto"}),
    "aggressive-moe": ("FP8 weights (MoE expert GEMMs included) and FP8 KV cache",
                       {"weights": "fp8", "kv_cache": "fp8"}),
}


def parallel_preset(name: str, engine: str, gpus_per_node: int) -> Fields:
    """The section fields a parallel preset stands for on this engine and node size."""
    return PARALLEL_PRESETS[name][1](engine, gpus_per_node)


def quantization_preset(name: str) -> Fields:
    return dict(QUANTIZATION_PRESETS[name][1])
