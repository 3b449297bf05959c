"""Engine flags as servetune handles them: names, parallelism keys, GPU count and argv.

Params are the engine's own flag names without leading dashes (``tp-size``,
``mem-fraction-static``), mapped to values. ``to_argv`` spells them as separate argv items
(``["--tp-size", "2"]``), never as one shell string, as the engine version's flag registry
(``common.engine_flags``) says: a flag by its canonical spelling, booleans as a bare flag (true)
and, for false, the flag's negative form where its parser defines one (``--no-<flag>``) or
nothing (store-true switches); a value that starts with ``-`` as ``--flag=value``.

The GPU count of a launch (its world size) is tensor × pipeline × data parallel size, read from
each engine's own flag names (aliases included). TensorRT-LLM has no data parallelism.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.engine_flags import REGISTRY_ENGINES, FlagRegistry, FlagSpec, registry, sim_flag

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


def to_argv(engine: Engine, flags: Mapping[str, Any], *,
            version: str | None = None) -> list[str]:
    """Flags as argv items, in the given order; ``None`` values are left out.

    Spelled from the flag registry of ``engine`` at ``version`` (None: the newest checked in);
    flags the registry does not know (the simulator's ``sim-*`` flags, TensorRT-LLM's) are
    spelled generically: true as the bare flag, false left out. Values are not validated here
    (``check_study_flags`` did that at load), but no value can become a flag of its own."""
    reg = _registry(engine, version)
    argv: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        found = reg.resolve(name) if reg is not None else None
        if found is not None:
            if found.negated and isinstance(value, bool):
                value = not value
            argv += found.spec.argv(value)
            continue
        spec = sim_flag(name) or FlagSpec(
            name=normalize_flag(name), options=("--" + normalize_flag(name),),
            kind="store_true" if isinstance(value, bool) else "store",
            nargs="+" if isinstance(value, (list, tuple)) else None)
        argv += spec.argv(value)
    return argv


def _registry(engine: Engine, version: str | None) -> FlagRegistry | None:
    if engine not in REGISTRY_ENGINES:
        return None
    return registry(engine, version)
