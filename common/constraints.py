"""Engine constraints on parallel layouts, as code: each with its reason and the engine source
that enforces it.

A constraint reads the parallel dimensions a set of engine flags implies
(``common.params.parallel_sizes``: tp, pp, dp, cp, dcp, ep, attn_dp and the dp_attention /
expert_parallel switches) and says whether the engine would start with them. They apply to
every layout a study can produce, whether it comes from the ``parallel`` section or from flags
given natively in ``search_space`` / ``fixed_flags``: the search space is pruned with them
before any trial runs (``manager.space``), and ``servetune validate`` prints each pruned layout
with the constraint that removed it.

Sources name the file and function of the engine's own repository where the rule is enforced
or follows from (read at vLLM main of 2026, SGLang 0.5.x, TensorRT-LLM 1.x); they are what to
re-read when a release changes the rule. The GPU count itself (which dimensions add GPUs) is
``common.params.world_size``; its references are listed here too (``WORLD_SIZE_SOURCES``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common.params import parallel_sizes

Sizes = Mapping[str, int]


@dataclass(frozen=True)
class Constraint:
    """One rule an engine enforces on its parallel layout."""

    name: str
    """Short id, shown in ``servetune validate`` (``sglang-ep-divides-tp``)."""
    engines: tuple[str, ...]
    rule: str
    """The rule, in the study's words."""
    reason: str
    """Why the engine has it."""
    source: str
    """Where the engine enforces it: ``<repository> <file>::<function>``."""
    holds: Callable[[Sizes], bool]

    def describe(self, sizes: Sizes) -> str:
        """The rule with the values that break it, for one line of output (the source is in
        docs/engine-parameters.md#constraints, by the constraint's name)."""
        shown = ", ".join(k if k in _SWITCHES else f"{k}={sizes[k]}"
                          for k in _SHOWN if k in sizes and _relevant(k, sizes))
        return f"{self.name}: {self.rule} (got {shown})"


@dataclass(frozen=True)
class Violation:
    """A layout a constraint rules out."""

    constraint: Constraint
    sizes: Mapping[str, int]

    def __str__(self) -> str:
        return self.constraint.describe(self.sizes)


def violations(engine: str, flags: Mapping[str, Any]) -> list[Violation]:
    """Every constraint of ``engine`` that these flags break (empty: the layout is valid)."""
    sizes = parallel_sizes(engine, flags)
    return [Violation(c, sizes) for c in CONSTRAINTS
            if engine in c.engines and not c.holds(sizes)]


def constraints_for(engine: str) -> list[Constraint]:
    return [c for c in CONSTRAINTS if engine in c.engines]


def _vllm_dcp(s: Sizes) -> bool:
    if s["cp"] == 1:
        return s["tp"] % s["dcp"] == 0
    return s["dcp"] in (1, s["cp"], s["tp"] * s["cp"])


def _sglang_attention_split(s: Sizes) -> bool:
    attn_dp = s["dp"] if s["dp_attention"] else s["attn_dp"]
    return s["tp"] % (attn_dp * s["cp"]) == 0


CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint(
        name="trtllm-no-dp", engines=("trtllm",),
        rule="TensorRT-LLM has no data parallelism",
        reason="trtllm-serve has no data-parallel option and its Mapping spans tp × pp × cp "
               "ranks only; scale out with more trials or replicas instead",
        source="TensorRT-LLM tensorrt_llm/commands/serve.py::serve, "
               "tensorrt_llm/mapping.py::Mapping.__init__",
        holds=lambda s: s["dp"] == 1),
    Constraint(
        name="vllm-dcp-divides-tp", engines=("vllm",),
        rule="decode-context-parallel-size must divide tensor-parallel-size (with prefill "
             "context parallelism: be 1, pcp or tp × pcp)",
        reason="decode context parallelism shards the KV cache over the tensor-parallel ranks "
               "it reuses; it adds no GPUs",
        source="vllm vllm/config/parallel.py::ParallelConfig._validate_parallel_config",
        holds=_vllm_dcp),
    Constraint(
        name="vllm-pcp-without-dp", engines=("vllm",),
        rule="prefill-context-parallel-size > 1 does not combine with data-parallel-size > 1",
        reason="vLLM's prefill context parallelism does not support data parallelism yet",
        source="vllm vllm/config/parallel.py::ParallelConfig._validate_parallel_config",
        holds=lambda s: s["cp"] == 1 or s["dp"] == 1),
    Constraint(
        name="sglang-attention-dp-divides-tp", engines=("sglang",),
        rule="tp-size must be divisible by attention-DP size × attn-cp-size (attention DP: "
             "attn-dp-size, or dp-size with --enable-dp-attention)",
        reason="attention data-parallel and context-parallel groups are carved out of the "
               "tensor-parallel ranks (attn_tp = tp / attn_dp / attn_cp); they add no GPUs",
        source="sglang python/sglang/srt/server_args.py::ServerArgs._handle_data_parallelism, "
               "python/sglang/srt/entrypoints/engine.py::_compute_parallelism_ranks",
        holds=_sglang_attention_split),
    Constraint(
        name="sglang-ep-divides-tp", engines=("sglang",),
        rule="ep-size must divide tp-size",
        reason="expert-parallel groups are carved out of the tensor-parallel ranks "
               "(moe_tp = tp / ep / moe_dp); ep adds no GPUs",
        source="sglang python/sglang/srt/distributed/parallel_state.py::"
               "initialize_model_parallel",
        holds=lambda s: s["ep"] <= s["tp"] and s["tp"] % s["ep"] == 0),
    Constraint(
        name="trtllm-ep-divides-tp", engines=("trtllm",),
        rule="ep_size must divide tp_size",
        reason="TensorRT-LLM requires moe_tp × moe_ep × moe_cluster = the MoE world (the tp "
               "ranks); ep splits the tensor-parallel GPUs and adds none",
        source="TensorRT-LLM tensorrt_llm/mapping.py::Mapping.__init__",
        holds=lambda s: s["ep"] <= s["tp"] and s["tp"] % s["ep"] == 0),
    Constraint(
        name="trtllm-cp-without-ep", engines=("trtllm",),
        rule="cp_size > 1 does not combine with ep_size > 1",
        reason="TensorRT-LLM's context parallelism (other than Helix) does not support MoE "
               "expert parallelism",
        source="TensorRT-LLM tensorrt_llm/mapping.py::Mapping.__init__",
        holds=lambda s: s["cp"] == 1 or s["ep"] == 1),
)

# Which dimensions add GPUs, per engine, and where the engine says so (common.params.world_size).
WORLD_SIZE_SOURCES: dict[str, tuple[str, str]] = {
    "vllm": ("tp × pp × dp × pcp (dcp and expert parallelism add none)",
             "vllm vllm/config/parallel.py::ParallelConfig.__post_init__ (world_size = "
             "pp × tp × pcp), ParallelConfig.world_size_across_dp (× dp), field docs of "
             "decode_context_parallel_size and data_parallel_size"),
    "sglang": ("tp × pp × dp, dp counted only without --enable-dp-attention (ep, attn-dp, "
               "attn-cp add none)",
               "sglang python/sglang/srt/managers/data_parallel_controller.py::"
               "DataParallelController.launch_dp_schedulers (each replica starts tp GPUs "
               "further) and launch_dp_attention_schedulers (one tp group for every dp rank)"),
    "trtllm": ("tp × pp × cp (ep adds none; no dp)",
               "TensorRT-LLM tensorrt_llm/mapping.py::Mapping.__init__ (world_size must equal "
               "tp × pp × cp)"),
}

_SHOWN = ("tp", "pp", "dp", "cp", "dcp", "ep", "attn_dp", "dp_attention", "expert_parallel")
_SWITCHES = ("dp_attention", "expert_parallel")


def _relevant(key: str, sizes: Sizes) -> bool:
    """Show sizes that are set (not 1) and switches that are on, plus tp always."""
    if key == "tp":
        return True
    if key in ("dp_attention", "expert_parallel"):
        return bool(sizes[key])
    return sizes[key] != 1
