"""SGLang: ``python -m sglang.launch_server --model-path <model> ...`` and its failures.

Messages matched here come from SGLang's sources (0.4 to 0.5): the memory-pool check in its
model runner and the CUDA-graph capture wrapper, whose advice (lower ``--mem-fraction-static``
or ``--cuda-graph-max-bs``) names the searched params that caused it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from common.results import FailureReason
from worker.engines.base import (
    COMMON_INFEASIBLE_RULES,
    COMMON_INFRA_RULES,
    FailureRule,
    check_flags,
    classify_log,
    cuda_visible_devices,
    rule,
)

_INFEASIBLE = FailureReason.INFEASIBLE_CONFIG

SGLANG_INFEASIBLE_RULES: tuple[FailureRule, ...] = (
    # The static memory fraction leaves no room for the KV-cache pool.
    rule(r"Not enough memory\. Please try to increase --mem-fraction-static", _INFEASIBLE),
    # Graph capture ran out of the memory outside the static fraction (or hit a buffer limit at
    # a batch size --cuda-graph-max-bs allows): deterministic for the config either way.
    rule(r"Capture cuda graph failed", _INFEASIBLE),
)

SGLANG_RULES: tuple[FailureRule, ...] = (
    *COMMON_INFRA_RULES, *COMMON_INFEASIBLE_RULES, *SGLANG_INFEASIBLE_RULES,
)


@dataclass(frozen=True)
class SglangEngine:
    """SGLang's server, run with this interpreter (SGLang installed in the worker's env)."""

    name: ClassVar[str] = "sglang"
    health_path: ClassVar[str] = "/health"

    def command(self, model: str, flags: Sequence[str], host: str, port: int,
                served_model_name: str) -> list[str]:
        check_flags(self.name, flags)
        return [sys.executable, "-m", "sglang.launch_server", "--model-path", model,
                "--host", host, "--port", str(port),
                "--served-model-name", served_model_name, *flags]

    def gpu_env(self, gpu_ids: Sequence[str]) -> dict[str, str]:
        return cuda_visible_devices(gpu_ids)

    def classify_failure(self, exit_code: int | None,
                         log_tail: str) -> tuple[FailureReason, str]:
        return classify_log(exit_code, log_tail, SGLANG_RULES)
