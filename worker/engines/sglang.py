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
    RuleClassifiedEngine,
    check_flags,
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
class SglangEngine(RuleClassifiedEngine):
    """SGLang's server, run with this interpreter (SGLang installed in the worker's env)."""

    python: str = sys.executable
    """Interpreter that has SGLang installed (an image's ``python3`` in a container)."""
    name: ClassVar[str] = "sglang"
    rules: ClassVar[tuple[FailureRule, ...]] = SGLANG_RULES

    def command(self, model: str, flags: Sequence[str], host: str, port: int,
                served_model_name: str) -> list[str]:
        check_flags(self.name, flags)
        return [self.python, "-m", "sglang.launch_server", "--model-path", model,
                "--host", host, "--port", str(port),
                "--served-model-name", served_model_name, *flags]
