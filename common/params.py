"""Engine flags as servetune handles them: names, parallelism keys, GPU count and argv.

Params are the engine's own flag names without leading dashes (``tp-size``,
``mem-fraction-static``), mapped to values. ``to_argv`` spells them as separate argv items
(``["--tp-size", "2"]``), never as one shell string, as the engine version's flag registry
(``common.engine_flags``) says: a flag by its canonical spelling, booleans as a bare flag (true)
and, for false, the flag's negative form where its parser defines one (``--no-<flag>``) or
nothing (store-true switches); a value that starts with ``-`` as ``--flag=value``.

The GPU count of a launch (its world size) is read from each engine's own flag names (aliases
included), as each engine's source counts it (``common/constraints.py`` holds the references):

- vLLM: tp × pp × dp × prefill-context-parallel size; decode-context parallelism reuses the
  tensor-parallel GPUs and expert parallelism shards the MoE layers over tp × dp: neither adds
  GPUs;
- SGLang: tp × pp × dp, where dp counts only as replicas: with ``--enable-dp-attention`` (and
  with ``--attn-dp-size``) the attention data-parallel groups live inside the tp GPUs;
  ``--ep-size`` and ``--attn-cp-size`` carve groups out of the tp GPUs too;
- TensorRT-LLM: tp × pp × cp (``--cp_size``); ``--ep_size`` splits the tp GPUs; it has no data
  parallelism.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.engine_flags import REGISTRY_ENGINES, FlagRegistry, FlagSpec, registry, sim_flag

Engine = str  # "vllm" | "sglang" | "trtllm"

# Parallelism flags per engine: dimension → accepted spellings. tp, pp, dp, cp, dcp, ep and
# attn_dp are sizes; dp_attention and expert_parallel are switches (vLLM's EP has no size of its
# own: it spans tp × dp).
PARALLEL_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {"tp": ("tensor-parallel-size", "tp"), "pp": ("pipeline-parallel-size", "pp"),
             "dp": ("data-parallel-size", "dp"),
             "dcp": ("decode-context-parallel-size", "dcp"),
             "cp": ("prefill-context-parallel-size", "pcp"),
             "expert_parallel": ("enable-expert-parallel", "ep")},
    "sglang": {"tp": ("tp-size", "tensor-parallel-size", "tp"),
               "pp": ("pp-size", "pipeline-parallel-size"),
               "dp": ("dp-size", "data-parallel-size", "dp"),
               "ep": ("ep-size", "expert-parallel-size", "ep"),
               "dcp": ("dcp-size", "decode-context-parallel-size"),
               "cp": ("attn-cp-size", "attention-context-parallel-size"),
               "attn_dp": ("attn-dp-size",),
               "dp_attention": ("enable-dp-attention",)},
    "trtllm": {"tp": ("tp_size", "tp-size", "tensor_parallel_size"),
               "pp": ("pp_size", "pp-size", "pipeline_parallel_size"),
               "cp": ("cp_size", "context_parallel_size"),
               "ep": ("ep_size", "moe_expert_parallel_size"), "dp": ()},
}
SWITCH_KEYS = frozenset({"dp_attention", "expert_parallel"})
SIZE_KEYS = ("tp", "pp", "dp", "cp", "dcp", "ep", "attn_dp")
# Flags that select a launch's identity, set by servetune itself, never by a study.
RESERVED_FLAGS = frozenset({"host", "port", "model", "model-path", "served-model-name"})


def normalize_flag(name: str) -> str:
    """``--tp-size`` / ``tp-size`` → ``tp-size`` (case kept: engines are case-sensitive)."""
    return name.lstrip("-")


def parallel_key(engine: Engine, flag: str) -> str | None:
    """Which parallel dimension (tp, pp, dp, cp, dcp, ep, attn_dp, dp_attention,
    expert_parallel) a flag sets for this engine, if any."""
    flag = normalize_flag(flag)
    for key, names in PARALLEL_FLAGS.get(engine, {}).items():
        if flag in names:
            return key
    return None


def parallel_sizes(engine: Engine, flags: Mapping[str, Any]) -> dict[str, int]:
    """Every parallel dimension a set of flags implies (sizes 1 and switches 0 where unset)."""
    sizes = {key: 1 for key in SIZE_KEYS} | {key: 0 for key in SWITCH_KEYS}
    for flag, value in flags.items():
        key = parallel_key(engine, flag)
        if key is not None and value is not None:
            sizes[key] = int(bool(value)) if key in SWITCH_KEYS else int(value)
    return sizes


def world_size(engine: Engine, flags: Mapping[str, Any]) -> int:
    """GPUs one launch with these flags needs, as the engine counts them (module docstring)."""
    s = parallel_sizes(engine, flags)
    if engine == "vllm":
        return s["tp"] * s["pp"] * s["dp"] * s["cp"]
    if engine == "sglang":
        replicas = 1 if s["dp_attention"] else s["dp"]
        return s["tp"] * s["pp"] * replicas
    if engine == "trtllm":
        return s["tp"] * s["pp"] * s["cp"]
    return s["tp"] * s["pp"] * s["dp"]


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
