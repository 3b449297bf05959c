"""vLLM: ``vllm serve <model> ...`` and how its startup failures read.

Messages matched here come from vLLM's own sources (0.6 to 0.11): the KV-cache profiling errors
of the V0 and V1 engines, the memory-utilization check at startup and its config validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from common.results import FailureReason
from worker.engines.base import (
    COMMON_INFEASIBLE_RULES,
    COMMON_INFRA_RULES,
    FailureRule,
    RuleClassifiedEngine,
    check_flags,
    rule,
)

_INFEASIBLE = FailureReason.INFEASIBLE_CONFIG

VLLM_INFEASIBLE_RULES: tuple[FailureRule, ...] = (
    # Weights + activations + CUDA graphs leave no KV-cache blocks.
    rule(r"No available memory for the cache blocks", _INFEASIBLE),
    # The KV cache cannot hold one max-length sequence (V1 wording, then V0 wording).
    rule(r"KV cache is needed, which is larger than the available KV cache memory", _INFEASIBLE),
    rule(r"larger than the maximum number of tokens that can be stored in KV cache", _INFEASIBLE),
    # --gpu-memory-utilization asks for more than the GPU has free at startup.
    rule(r"less than desired GPU memory utilization", _INFEASIBLE),
    # Flag combinations the engine rejects.
    rule(r"max_num_batched_tokens \(\d+\) (must be greater than or equal to max_num_seqs"
         r"|is smaller than max_model_len)", _INFEASIBLE),
    rule(r"must be divisible by (tensor|pipeline) parallel size", _INFEASIBLE),
    rule(r"Unknown quantization method", _INFEASIBLE),
)

VLLM_RULES: tuple[FailureRule, ...] = (
    *COMMON_INFRA_RULES, *COMMON_INFEASIBLE_RULES, *VLLM_INFEASIBLE_RULES,
)


@dataclass(frozen=True)
class VllmEngine(RuleClassifiedEngine):
    """vLLM's OpenAI-compatible server, ``vllm serve`` (the ``vllm`` console script on PATH)."""

    name: ClassVar[str] = "vllm"
    rules: ClassVar[tuple[FailureRule, ...]] = VLLM_RULES

    def command(self, model: str, flags: Sequence[str], host: str, port: int,
                served_model_name: str) -> list[str]:
        check_flags(self.name, flags)
        return ["vllm", "serve", model, "--host", host, "--port", str(port),
                "--served-model-name", served_model_name, *flags]
