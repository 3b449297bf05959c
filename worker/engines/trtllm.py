"""TensorRT-LLM: ``trtllm-serve <model> ...`` and how its failures read.

Facts this module relies on (TensorRT-LLM sources, ``tensorrt_llm/commands/serve.py`` and
``tensorrt_llm/serve/openai_server.py``, 0.18 to 1.2):
- ``trtllm-serve`` is a click group whose default command is ``serve``, so
  ``trtllm-serve <model> --host H --port P`` starts the OpenAI server; options are spelled with
  underscores (``--tp_size``, ``--max_batch_size``, ``--kv_cache_free_gpu_memory_fraction``).
- Releases up to 1.2 have no ``--served_model_name``: the server advertises the model argument,
  or, for a local directory, its last path component. Later builds accept
  ``--served_model_name``; ``TrtllmEngine(served_model_name_flag=True)`` passes it.
- click reports bad options as ``Error: No such option: --x`` / ``Error: Invalid value for
  '--tp_size': ...`` with exit status 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from common.errors import ConfigError
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

TRTLLM_INFEASIBLE_RULES: tuple[FailureRule, ...] = (
    # The PyTorch-backend executor's own OOM report ("Executor creation failed due to
    # insufficient GPU memory. The following component could not be created: KV cache").
    rule(r"insufficient GPU memory", _INFEASIBLE),
    # click usage errors.
    rule(r"^Error: (Invalid value for|No such option|Missing (option|argument)"
         r"|Got unexpected extra argument)", _INFEASIBLE),
)

TRTLLM_RULES: tuple[FailureRule, ...] = (
    *COMMON_INFRA_RULES, *COMMON_INFEASIBLE_RULES, *TRTLLM_INFEASIBLE_RULES,
)


@dataclass(frozen=True)
class TrtllmEngine(RuleClassifiedEngine):
    """TensorRT-LLM's ``trtllm-serve`` (console script on PATH).

    ``served_model_name_flag``: pass ``--served_model_name`` (builds after 1.2). Without it the
    served name cannot be chosen, and ``command`` requires ``served_model_name`` to equal
    ``advertised_model_name(model)``.
    """

    served_model_name_flag: bool = False
    name: ClassVar[str] = "trtllm"
    rules: ClassVar[tuple[FailureRule, ...]] = TRTLLM_RULES

    def command(self, model: str, flags: Sequence[str], host: str, port: int,
                served_model_name: str) -> list[str]:
        check_flags(self.name, flags)
        argv = ["trtllm-serve", model, "--host", host, "--port", str(port)]
        if self.served_model_name_flag:
            return [*argv, "--served_model_name", served_model_name, *flags]
        advertised = self.advertised_model_name(model)
        if served_model_name != advertised:
            raise ConfigError(
                f"trtllm-serve without --served_model_name serves {model!r} as {advertised!r}, "
                f"not {served_model_name!r}: use {advertised!r} as the served model name, or "
                "get_engine('trtllm', served_model_name_flag=True) for a build that has the "
                "flag", path="served_model_name", value=served_model_name,
                allowed=[advertised])
        return [*argv, *flags]

    @staticmethod
    def advertised_model_name(model: str) -> str:
        """The name trtllm-serve (<= 1.2) serves ``model`` under: a local directory's last
        path component, else ``model`` as given. Reads the local filesystem."""
        path = Path(model)
        return path.name if path.is_dir() else model
