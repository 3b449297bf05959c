"""Engine flags as servetune handles them: names, parallelism keys, GPU count and argv.

Params are the engine's own flag names without leading dashes (``tp-size``,
``mem-fraction-static``), mapped to values. ``to_argv`` spells them as separate argv items
(``["--tp-size", "2"]``), never as one shell string; booleans become a bare flag (true) or the
engine's negative form (false; vLLM's ``--no-<flag>``) or nothing (SGLang's store-true flags).

The GPU count of a launch (its world size) is tensor × pipeline × data parallel size, read from
each engine's own flag names (aliases included). TensorRT-LLM has no data parallelism.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Engine = str  # "vllm" | "sglang" | "trtllm"

# Parallelism flags per engine: (tensor, pipeline, data) → accepted spellings.
PARALLEL_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {"tp": ("tensor-parallel-size", "tp"), "pp": ("pipeline-parallel-size", "pp"),
             "dp": ("data-parallel-size", "dp")},
    "sglang": {"tp": ("tp-size", "tensor-parallel-size", "tp"),
               "pp": ("pp-size", "pipeline-parallel-size"),
               "dp": ("dp-size", "data-parallel-size", "dp")},
    "trtllm": {"tp": ("tp_size", "tp-size"), "pp": ("pp_size", "pp-size"), "dp": ()},
}
# Flags that select a launch's identity, set by servetune itself, never by a study.
RESERVED_FLAGS = frozenset({"host", "port", "model", "model-path", "served-model-name"})


def normalize_flag(name: str) -> str:
    """``--tp-size`` / ``tp-size`` → ``tp-size`` (case kept: engines are case-sensitive)."""
    return name.lstrip("-")


def parallel_key(engine: Engine, flag: str) -> str | None:
    """Which parallel dimension (tp, pp, dp) a flag sets for this engine, if any."""
    flag = normalize_flag(flag)
    for key, names in PARALLEL_FLAGS.get(engine, {}).items():
        if flag in names:
            return key
    return None


def parallel_sizes(engine: Engine, flags: Mapping[str, Any]) -> dict[str, int]:
    """The tp, pp and dp sizes a set of flags implies (1 where unset)."""
    sizes = {"tp": 1, "pp": 1, "dp": 1}
    for flag, value in flags.items():
        key = parallel_key(engine, flag)
        if key is not None:
            sizes[key] = int(value)
    return sizes


def world_size(engine: Engine, flags: Mapping[str, Any]) -> int:
    """GPUs one launch with these flags needs: tp × pp × dp."""
    sizes = parallel_sizes(engine, flags)
    return sizes["tp"] * sizes["pp"] * sizes["dp"]


def to_argv(engine: Engine, flags: Mapping[str, Any]) -> list[str]:
    """Flags as argv items, in the given order; ``None`` values are left out."""
    argv: list[str] = []
    for name, value in flags.items():
        flag = "--" + normalize_flag(name)
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(flag)
            elif engine == "vllm":
                argv.append("--no-" + normalize_flag(name))
            continue
        if isinstance(value, (list, tuple)):
            argv.append(flag)
            argv.extend(_scalar(v) for v in value)
            continue
        argv += [flag, _scalar(value)]
    return argv


def _scalar(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # Integer-valued floats from numeric search ranges: engines parse "8192", not "8192.0".
        return str(int(value))
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)
