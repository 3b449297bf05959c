"""Engine parameters by intent: the study's ``parallel`` and ``quantization`` sections.

The sections say what a deployment should do (``tp: [1, 2, 4]``, ``kv_cache: fp8``, or a
named preset, ``parallel: moe-optimized``) in words that do not depend on the engine;
``expand`` maps them, by one path for every engine, to the engine's native flags, whose
spellings it resolves through the engine version's flag registry (SGLang ``tp-size``, vLLM
``tensor-parallel-size``, ...). A version that lacks a flag a field needs is a config error
naming the field. The result feeds the existing machinery: scalars become fixed flags, lists
become search-space entries (parallel flags are searched jointly as one layout param), and
``ties`` say which layout flags follow another (SGLang ``ep: true``: ep-size = tp-size).

Native flags the study gives itself (``fixed_flags`` / ``search_space``) win over derived
ones; ``merge`` reports each such override, and the study warns about it. Section values are
checked against the same registry entries (types, choices) as native flags, and names are
restricted to plain words, so nothing hostile reaches an engine.

Offline-quantized checkpoints: ``quantization.checkpoint`` is the checkpoint's own
quantization (``awq``, ``gptq``, ``fp8``, ...), read from a local model directory's
``config.json`` (``quantization_config.quant_method``) when ``model.name`` is a path and left
``auto`` (unknown: treated as not quantized) otherwise; a ``--quantization`` that conflicts
with it is an error (the engines refuse it at startup), and a preset's weight dtype is left out
for such a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from common.engine_flags import REGISTRY_ENGINES, FlagRegistry, FlagValueError, registry
from common.errors import ConfigError
from common.params import PARALLEL_FLAGS, parallel_key, parallel_sizes
from common.presets import (
    ParallelPreset,
    QuantizationPreset,
    parallel_preset,
    quantization_preset,
)

Word = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")]
Size = Annotated[int, Field(ge=1)]
SizeSpec = Size | Annotated[list[Size], Field(min_length=1)]
WordSpec = Word | Annotated[list[Word], Field(min_length=1)]
EpSpec = bool | Size | Annotated[list[bool] | list[Size], Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ParallelSection(_Section):
    preset: ParallelPreset | None = None
    """A named layout set (docs/engine-parameters.md#presets); fields given next to it
    override the preset's. ``parallel: <name>`` is short for ``parallel: {preset: <name>}``."""
    tp: SizeSpec | None = None
    """Tensor-parallel size: a value, or a list to search."""
    pp: SizeSpec | None = None
    """Pipeline-parallel size."""
    dp: SizeSpec | None = None
    """Data-parallel replicas (each with tp × pp GPUs). TensorRT-LLM has none."""
    ep: EpSpec | None = None
    """Expert parallelism: true shards the MoE experts over the tensor(×data)-parallel GPUs
    (vLLM --enable-expert-parallel; SGLang/TensorRT-LLM ep = tp); a size sets SGLang
    --ep-size / TensorRT-LLM --ep_size (it must divide tp; it adds no GPUs)."""
    dcp: SizeSpec | None = None
    """vLLM decode-context parallelism: the KV cache sharded over the tp GPUs (divides tp)."""
    cp: SizeSpec | None = None
    """Context parallelism: vLLM --prefill-context-parallel-size (adds GPUs), SGLang
    --attn-cp-size (inside the tp GPUs), TensorRT-LLM --cp_size (adds GPUs)."""
    attn_dp: SizeSpec | None = None
    """SGLang data-parallel attention groups inside the tp GPUs (--attn-dp-size, or
    --enable-dp-attention with --dp-size on releases before it); divides tp."""
    moe_tp: Size | None = None
    """TensorRT-LLM MoE tensor-parallel size: checked, not passed (TensorRT-LLM derives it as
    tp / ep)."""


class QuantizationSection(_Section):
    preset: QuantizationPreset | None = None
    """A named dtype set (docs/engine-parameters.md#presets); fields given next to it override
    the preset's. ``quantization: <name>`` is short for ``quantization: {preset: <name>}``."""
    weights: WordSpec | None = None
    """Weight/GEMM quantization method (--quantization): ``fp8`` quantizes at load time;
    ``none`` leaves the flag out. Must agree with an offline-quantized checkpoint."""
    kv_cache: WordSpec | None = None
    """KV-cache dtype (--kv-cache-dtype): ``auto``, ``fp8``, ``fp8_e4m3``, ``fp8_e5m2``,
    ``bf16``, or another name the engine accepts."""
    dtype: WordSpec | None = None
    """Model/activation dtype (--dtype): ``auto``, ``bf16``, ``fp16``, ..."""
    moe: WordSpec | None = None
    """MoE compute precision where the engine has a flag for it (SGLang
    --flashinfer-mxfp4-moe-precision: ``default``, ``bf16``, ``fp8``)."""
    checkpoint: Word = "auto"
    """The checkpoint's own quantization: ``auto`` (read from a local model directory's
    config.json, unknown otherwise), ``none``, or its method (``awq``, ``gptq``, ``fp8``, ...)."""


@dataclass
class Expansion:
    """Native flags the sections stand for (before the study's own flags are merged in)."""

    fixed_flags: dict[str, Any] = field(default_factory=dict)
    search_space: dict[str, list[Any]] = field(default_factory=dict)
    ties: dict[str, str] = field(default_factory=dict)
    """Layout flag → the parallel dimension (tp) whose value it takes in every layout."""
    origins: dict[str, str] = field(default_factory=dict)
    """Native flag → the section field it came from (``parallel.tp (preset balanced)``)."""
    checkpoint: str = "auto"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Runtime-agnostic dtype names → each engine's spelling (other names pass through and are
# checked against the registry's choices).
KV_CACHE_NAMES = {"vllm": {"bf16": "bfloat16"}, "sglang": {"fp8": "fp8_e4m3"}}
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Methods an engine accepts for a checkpoint quantized with the key (its kernels for it).
COMPATIBLE_WEIGHTS = {"awq": {"awq", "awq_marlin", "marlin"},
                      "gptq": {"gptq", "gptq_marlin", "marlin"}}
_CHECKPOINT_SOURCE = ("vllm vllm/config/model.py::ModelConfig._verify_quantization, sglang "
                      "python/sglang/srt/configs/model_config.py::ModelConfig._verify_quantization")


def expand(engine: str, version: str | None, gpus_per_node: int, model_name: str,
           parallel: ParallelSection | None,
           quantization: QuantizationSection | None) -> Expansion:
    """The native flags of both sections for this engine version (problems listed, not
    raised)."""
    out = Expansion()
    try:
        reg = registry(engine, version) if engine in REGISTRY_ENGINES else None
    except ConfigError:
        return out  # the flag check reports the version
    if parallel is not None:
        _parallel(out, engine, reg, gpus_per_node, parallel)
    if quantization is not None:
        _quantization(out, engine, reg, model_name, quantization)
    return out


def merge(engine: str, version: str | None, out: Expansion, search_space: Mapping[str, Any],
          fixed_flags: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The study's flags with the derived ones added, and one line per derived flag that a
    native flag of the study overrides (the study's own flag wins)."""
    canon = _canonical(engine, version)
    given = {canon(n): n for n in [*search_space, *fixed_flags]}
    space, fixed = dict(search_space), dict(fixed_flags)
    overrides: list[str] = []
    for derived, target in ((out.search_space, space), (out.fixed_flags, fixed)):
        for name, value in derived.items():
            native = given.get(canon(name))
            if native is None:
                target[name] = value
                continue
            mine = search_space.get(native, fixed_flags.get(native))
            if _same(mine, value):
                continue
            where = "search_space" if native in search_space else "fixed_flags"
            overrides.append(f"{where}.{native} overrides {out.origins.get(name, name)} "
                             f"(--{name} {_show(value)} → {_show(mine)})")
    for name in list(out.ties):
        native = given.get(canon(name))
        searched = any(parallel_key(engine, n) == out.ties[name] for n in space)
        if native is not None:
            tied = parallel_sizes(engine, fixed)[out.ties[name]]
            if searched or fixed_flags.get(native) != tied:
                where = "search_space" if native in search_space else "fixed_flags"
                overrides.append(f"{where}.{native} overrides {out.origins.get(name, name)}")
            del out.ties[name]
            continue
        if not searched:  # the tied dimension is fixed: so is the flag that follows it
            fixed[name] = parallel_sizes(engine, fixed)[out.ties.pop(name)]
    return space, fixed, overrides


def detect_checkpoint(model_name: str) -> str | None:
    """A local model directory's ``quantization_config.quant_method`` (``none`` when its
    config.json has none); None when ``model_name`` is not a readable local directory."""
    config = Path(model_name).expanduser() / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    quant = data.get("quantization_config") if isinstance(data, dict) else None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method).lower() if method else "none"


def checkpoint_conflicts(checkpoint: str, values: list[Any], path: str) -> list[str]:
    """Problems with --quantization values given for a checkpoint quantized offline."""
    if checkpoint in ("auto", "none"):
        return []
    allowed = COMPATIBLE_WEIGHTS.get(checkpoint, {checkpoint})
    return [f"{path}: --quantization {v} conflicts with the checkpoint's own quantization "
            f"{checkpoint!r} (quantization.checkpoint / config.json quantization_config); the "
            f"engine refuses it at startup ({_CHECKPOINT_SOURCE}). Leave it unset (the engine "
            f"reads the checkpoint's method) or use one of: {', '.join(sorted(allowed))}"
            for v in values if str(v) not in allowed]


def trial_intent(parallel: ParallelSection | None, quantization: QuantizationSection | None,
                 origins: Mapping[str, str], flags: Mapping[str, Any]) -> dict[str, Any]:
    """One trial's section values, read back from its native flags (``parallel.tp: 4``):
    what the trial was, in the study's own words."""
    intent: dict[str, Any] = {}
    for section, name in (("parallel", parallel), ("quantization", quantization)):
        if name is not None and name.preset is not None:
            intent[f"{section}.preset"] = name.preset
    for flag, origin in origins.items():
        if flag in flags:
            intent[origin.split(" ")[0]] = flags[flag]
    return intent


def _parallel(out: Expansion, engine: str, reg: FlagRegistry | None, gpus: int,
              section: ParallelSection) -> None:
    fields = parallel_preset(section.preset, engine, gpus) if section.preset else {}
    preset_fields = set(fields)
    fields.update(section.model_dump(exclude={"preset"}, exclude_none=True))
    for key, value in fields.items():
        origin = f"parallel.{key}" + (f" (preset {section.preset})"
                                      if key in preset_fields and key not in
                                      section.model_fields_set else "")
        _parallel_field(out, engine, reg, key, value, origin, fields)


def _parallel_field(out: Expansion, engine: str, reg: FlagRegistry | None, key: str, value: Any,
                    origin: str, fields: Mapping[str, Any]) -> None:
    values = value if isinstance(value, list) else [value]
    path = origin.split(" ")[0]
    if key == "moe_tp":
        _moe_tp(out, engine, value, fields, path)
        return
    if key == "dp" and engine == "trtllm":
        if values != [1]:
            out.problems.append(f"{path}: TensorRT-LLM has no data parallelism (constraint "
                                "trtllm-no-dp; see docs/engine-parameters.md#constraints); "
                                "scale out with more trials or replicas, or pick another "
                                "preset")
        return
    if key == "attn_dp":
        _attention_dp(out, engine, reg, value, origin, fields)
        return
    if key == "ep":
        _expert_parallel(out, engine, reg, value, origin, fields)
        return
    if key == "dcp" and engine != "vllm":
        out.problems.append(f"{path}: decode-context parallelism is mapped for vllm only (set "
                            f"{engine}'s flag natively if it has one)")
        return
    _emit(out, engine, reg, key, key, value, origin)


def _attention_dp(out: Expansion, engine: str, reg: FlagRegistry | None, value: Any,
                  origin: str, fields: Mapping[str, Any]) -> None:
    path = origin.split(" ")[0]
    if engine != "sglang" or reg is None:
        out.problems.append(f"{path}: data-parallel attention groups inside the tp GPUs are "
                            f"an SGLang feature; {engine} runs dp replicas (use parallel.dp)")
        return
    if reg.lookup("attn-dp-size") is not None:
        _emit(out, engine, reg, "attn_dp", "attn_dp", value, origin)
        return
    if reg.lookup("enable-dp-attention") is None:
        out.problems.append(f"{path}: sglang {reg.version} has no attention data-parallel "
                            "flag (attn-dp-size or enable-dp-attention)")
        return
    if fields.get("dp", 1) not in (1, [1]):
        out.problems.append(f"{path}: sglang {reg.version} spells attention DP as "
                            "--enable-dp-attention with --dp-size, so it cannot also run "
                            "parallel.dp replicas; drop one of them")
        return
    _emit(out, engine, reg, "dp_attention", "attn_dp", True, origin)
    _emit(out, engine, reg, "dp", "attn_dp", value, origin)


def _expert_parallel(out: Expansion, engine: str, reg: FlagRegistry | None, value: Any,
                     origin: str, fields: Mapping[str, Any]) -> None:
    path = origin.split(" ")[0]
    values = value if isinstance(value, list) else [value]
    switches = all(isinstance(v, bool) for v in values)
    if engine == "vllm":
        if not switches:
            out.problems.append(f"{path}: vLLM's expert parallelism has no size of its own "
                                "(it spans tp × dp); give true or false")
            return
        _emit(out, engine, reg, "expert_parallel", "ep", value, origin)
        return
    if not switches:
        _emit(out, engine, reg, "ep", "ep", value, origin)
        return
    if len(values) > 1:
        out.problems.append(f"{path}: a list of switches is searched on vLLM only; give ep "
                            "sizes to search (they must divide tp)")
        return
    if values[0]:
        flag = _flag(out, engine, reg, "ep", path)
        if flag is not None:
            out.ties[flag] = "tp"
            out.origins[flag] = origin


def _moe_tp(out: Expansion, engine: str, value: int, fields: Mapping[str, Any],
            path: str) -> None:
    if engine != "trtllm":
        out.problems.append(f"{path}: the MoE tensor-parallel size is checked for trtllm only "
                            f"({engine} derives it from tp and ep)")
        return
    tp, ep = fields.get("tp", 1), fields.get("ep", 1)
    if isinstance(tp, list) or isinstance(ep, list):
        out.problems.append(f"{path}: moe_tp can only be checked against a single tp and ep")
        return
    ep_size = tp if ep is True else (1 if ep is False else ep)
    if value * ep_size != tp:
        out.problems.append(f"{path}: moe_tp ({value}) × ep ({ep_size}) must equal tp ({tp}) "
                            "(TensorRT-LLM tensorrt_llm/mapping.py::Mapping.__init__)")


def _quantization(out: Expansion, engine: str, reg: FlagRegistry | None, model_name: str,
                  section: QuantizationSection) -> None:
    checkpoint = section.checkpoint.lower()
    if checkpoint == "auto":
        checkpoint = detect_checkpoint(model_name) or "auto"
    out.checkpoint = checkpoint
    fields = quantization_preset(section.preset) if section.preset else {}
    preset_fields = set(fields)
    fields.update(section.model_dump(exclude={"preset", "checkpoint"}, exclude_none=True))
    if engine == "trtllm" and fields:
        out.problems.append("quantization: TensorRT-LLM takes weight and KV-cache dtypes only "
                            "in its --extra_llm_api_options file (LlmArgs quant_config, "
                            "kv_cache_config.dtype), which servetune does not write; use "
                            "preset default, or give the file in fixed_flags")
        return
    for key, value in fields.items():
        from_preset = key in preset_fields and key not in section.model_fields_set
        origin = f"quantization.{key}" + (f" (preset {section.preset})" if from_preset else "")
        values = value if isinstance(value, list) else [value]
        if key == "weights":
            if checkpoint not in ("auto", "none") and from_preset:
                out.notes.append(f"{origin}: --quantization {value} left out: the checkpoint "
                                 f"is already {checkpoint}-quantized")
                continue
            if "none" in values:
                if len(values) > 1:
                    out.problems.append("quantization.weights: 'none' cannot be searched; "
                                        "leave weights unset to compare against the default")
                continue
            out.problems += checkpoint_conflicts(checkpoint, values, "quantization.weights")
        names = {"kv_cache": KV_CACHE_NAMES.get(engine, {}), "dtype": DTYPE_NAMES}.get(key, {})
        native = [names.get(str(v), v) for v in values]
        _emit(out, engine, reg, key, key, native if isinstance(value, list) else native[0],
              origin)


_QUANT_FLAGS = {"weights": ("quantization",), "kv_cache": ("kv-cache-dtype",),
                "dtype": ("dtype",)}
_MOE_FLAGS = {"sglang": ("flashinfer-mxfp4-moe-precision",)}


def _candidates(engine: str, key: str) -> tuple[str, ...]:
    if key in _QUANT_FLAGS:
        return _QUANT_FLAGS[key]
    if key == "moe":
        return _MOE_FLAGS.get(engine, ())
    return PARALLEL_FLAGS.get(engine, {}).get(key, ())


def _flag(out: Expansion, engine: str, reg: FlagRegistry | None, key: str,
          path: str) -> str | None:
    """The native flag for a dimension, spelled as the registry has it (None: a problem)."""
    names = _candidates(engine, key)
    if reg is None:
        if names:
            return names[0]
        out.problems.append(f"{path}: {engine} has no flag for it")
        return None
    for name in names:
        spec = reg.lookup(name)
        if spec is not None:
            return spec.name
    wanted = f" ({', '.join(names)})" if names else ""
    out.problems.append(f"{path}: {engine} {reg.version} has no flag for it{wanted}; pick an "
                        "engine.version that has one (docs/engine-parameters.md lists them)")
    return None


def _emit(out: Expansion, engine: str, reg: FlagRegistry | None, key: str, field_key: str,
          value: Any, origin: str) -> None:
    path = origin.split(" ")[0]
    flag = _flag(out, engine, reg, key, path)
    if flag is None:
        return
    values = value if isinstance(value, list) else [value]
    spec = reg.lookup(flag) if reg is not None else None
    if spec is not None:
        for item in values:
            try:
                spec.validate(item)
            except FlagValueError as e:
                out.problems.append(f"{path}: {e}")
                return
    out.origins[flag] = origin
    if isinstance(value, list):
        out.search_space[flag] = list(value)
    else:
        out.fixed_flags[flag] = value


def _canonical(engine: str, version: str | None) -> Any:
    reg = None
    try:
        reg = registry(engine, version) if engine in REGISTRY_ENGINES else None
    except ConfigError:
        pass

    def canon(name: str) -> str:
        spec = reg.lookup(name) if reg is not None else None
        if spec is not None:
            return spec.name
        key = parallel_key(engine, name)
        return f"<{key}>" if key is not None else name.lstrip("-")

    return canon


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, BaseModel) or isinstance(b, BaseModel):
        return False
    return bool(a == b)


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return str(value.model_dump(exclude_none=True))
    return str(value)
