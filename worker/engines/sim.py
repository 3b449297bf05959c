"""The simulated engine (``worker.sim``), speaking the vLLM or the SGLang dialect.

``SimulatedEngine("vllm")`` starts ``python -m worker.sim serve --engine vllm <model> ...`` with
vLLM's flag names; ``SimulatedEngine("sglang")`` passes the model as ``--model-path`` and takes
SGLang's. The simulator prints the real engine's error messages, so failures are read with that
dialect's rules, plus the simulator's own wording for flag values it rejects.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from common.errors import ConfigError
from common.results import FailureReason
from worker.engines.base import FailureRule, RuleClassifiedEngine, check_flags, rule
from worker.engines.sglang import SGLANG_RULES
from worker.engines.vllm import VLLM_RULES

DIALECTS = ("vllm", "sglang")

SIM_INFEASIBLE_RULES: tuple[FailureRule, ...] = (
    # "ERROR [servetune-sim] ValueError: --max-num-batched-tokens: 2048 must be greater than or
    # equal to --max-num-seqs (4096)": a flag value or combination the engine would reject.
    rule(r"\[servetune-sim\] ValueError: --[\w-]+:", FailureReason.INFEASIBLE_CONFIG),
)

_DIALECT_RULES: dict[str, tuple[FailureRule, ...]] = {
    "vllm": (*VLLM_RULES, *SIM_INFEASIBLE_RULES),
    "sglang": (*SGLANG_RULES, *SIM_INFEASIBLE_RULES),
}


@dataclass(frozen=True)
class SimulatedEngine(RuleClassifiedEngine):
    """The simulated engine in one dialect (``vllm`` or ``sglang``), run with this interpreter.

    Raises ``ConfigError`` for another dialect. ``--sim-*`` options (GPU type, startup scale,
    fault switches) go in ``flags`` like engine flags.
    """

    dialect: str = "vllm"
    python: str = sys.executable
    """Interpreter that runs ``-m worker.sim`` (an image's ``python3`` in a container)."""
    name: ClassVar[str] = "sim"

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ConfigError(
                f"sim: dialect {self.dialect!r} is not one of {', '.join(DIALECTS)}",
                path="engine.dialect", value=self.dialect, allowed=DIALECTS)

    def command(self, model: str, flags: Sequence[str], host: str, port: int,
                served_model_name: str) -> list[str]:
        check_flags(self.name, flags)
        model_args = [model] if self.dialect == "vllm" else ["--model-path", model]
        return [self.python, "-m", "worker.sim", "serve", "--engine", self.dialect,
                *model_args, "--host", host, "--port", str(port),
                "--served-model-name", served_model_name, *flags]

    def failure_rules(self) -> tuple[FailureRule, ...]:
        return _DIALECT_RULES[self.dialect]
