"""The parallel and quantization sections: presets and fields mapped to each engine's native
flags by one path, checked against the engine's own parser definitions (the registry)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from common.config import IntentOverrideWarning, StudyConfig, parse_study
from common.constraints import CONSTRAINTS, violations
from common.engine_flags import SIM_FLAGS, available_versions, registry
from common.engine_flags.parser import parse_argv
from common.errors import ConfigError
from common.params import to_argv, world_size
from common.presets import PARALLEL_PRESETS, QUANTIZATION_PRESETS
from manager.space import build_plan, trial_flags

VERSIONS = [(e, v) for e in ("vllm", "sglang") for v in available_versions(e)]
IDS = [f"{e}-{v}" for e, v in VERSIONS]
OTHER = {"vllm": "max-num-seqs", "sglang": "max-running-requests"}


def study(engine: str, version: str | None = None, gpus: int = 8, **sections: Any) -> StudyConfig:
    data: dict[str, Any] = {"name": "s", "model": {"name": "m"},
                            "engine": {"name": engine, "version": version},
                            "cluster": {"gpus_per_node": gpus},
                            "search_space": {OTHER.get(engine, "max_batch_size"): [64, 128]}}
    data.update(sections)
    return parse_study(data)


def every_trial_flags(s: StudyConfig) -> list[dict[str, Any]]:
    """The flags of every layout the search can pick (other searched flags at their first)."""
    plan = build_plan(s, s.cluster.gpus_per_node)
    rest = {name: spec[0] for name, spec in s.search_space.items() if name in plan.param_space
            or (plan.grid_points is None and name != "parallel" and isinstance(spec, list))}
    configs = [{"parallel": label, **rest} for label in plan.layouts] if "parallel" in (
        plan.param_space) else [rest]
    return [trial_flags(s, plan, {k: v for k, v in c.items() if k != "parallel"
                                  or v in plan.layouts}) for c in configs]


@pytest.mark.parametrize("preset", sorted(PARALLEL_PRESETS))
@pytest.mark.parametrize(("engine", "version"), VERSIONS, ids=IDS)
def test_every_parallel_preset_emits_argv_the_engine_parser_accepts(engine: str, version: str,
                                                                    preset: str) -> None:
    """Each layout of each parallel preset, as argv, parses with the engine version's own
    parser definitions (rebuilt from the checked-in registry), and fits the node."""
    s = study(engine, version, parallel=preset, quantization="kv-cache-fp8")
    reg = registry(engine, version)
    for flags in every_trial_flags(s):
        argv = to_argv(engine, flags, version=version)
        parse_argv(reg, argv)
        assert world_size(engine, flags) <= 8
        assert not violations(engine, flags)


@pytest.mark.parametrize("preset", sorted(QUANTIZATION_PRESETS))
@pytest.mark.parametrize(("engine", "version"), VERSIONS, ids=IDS)
def test_every_quantization_preset_emits_argv_the_engine_parser_accepts(
        engine: str, version: str, preset: str) -> None:
    s = study(engine, version, quantization=preset, parallel="balanced")
    for flags in every_trial_flags(s):
        parse_argv(registry(engine, version), to_argv(engine, flags, version=version))


@pytest.mark.parametrize("preset", sorted(PARALLEL_PRESETS))
@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_the_simulated_engine_accepts_every_mapped_argv(engine: str, preset: str) -> None:
    """The simulator parses (and resolves) the argv of every preset layout, and counts the
    same GPUs as the trial requests."""
    from worker.sim.catalog import find_gpu, find_model
    from worker.sim.engine_args import parse_engine_argv, resolve

    for version in available_versions(engine):
        for quant in QUANTIZATION_PRESETS:
            s = parse_study({
                "name": "s", "model": {"name": "Qwen/Qwen3-30B-A3B"},
                "engine": {"name": engine, "version": version, "simulated": True},
                "parallel": preset, "quantization": quant,
                "search_space": {OTHER[engine]: [64]}})
            for flags in every_trial_flags(s):
                argv = to_argv(engine, flags, version=version)
                parse_argv(registry(engine, version), argv, SIM_FLAGS.values())
                model = ["Qwen/Qwen3-30B-A3B"] if engine == "vllm" else [
                    "--model-path", "Qwen/Qwen3-30B-A3B"]
                args, _ = parse_engine_argv(["--engine", engine, *model, *argv])
                assert args.world_size == world_size(engine, flags), (argv, flags)
                assert not set(argv) & set(args.ignored_flags), argv
                resolve(args, find_model("Qwen/Qwen3-30B-A3B"), find_gpu("H100-SXM-80GB"))


def test_native_flags_are_resolved_through_the_registry() -> None:
    """The same field becomes each engine's own spelling."""
    assert study("vllm", parallel={"tp": 2}).fixed_flags["tensor-parallel-size"] == 2
    assert study("sglang", parallel={"tp": 2}).fixed_flags["tp-size"] == 2
    vllm = study("vllm", parallel={"ep": True}, quantization={"kv_cache": "fp8"})
    assert vllm.fixed_flags == {"enable-expert-parallel": True, "kv-cache-dtype": "fp8"}
    sglang = study("sglang", quantization={"kv_cache": "fp8", "dtype": "bf16"})
    assert sglang.fixed_flags == {"kv-cache-dtype": "fp8_e4m3", "dtype": "bfloat16"}


def test_attention_dp_follows_the_release_spelling() -> None:
    """SGLang 0.5.23 has --attn-dp-size; 0.5.19 spells it --enable-dp-attention --dp-size.
    Either way the attention groups live inside the tp GPUs."""
    new = study("sglang", "0.5.23", parallel={"tp": 8, "attn_dp": [2, 4]})
    assert new.search_space["attn-dp-size"] == [2, 4]
    old = study("sglang", "0.5.19", parallel={"tp": 8, "attn_dp": [2, 4]})
    assert old.fixed_flags["enable-dp-attention"] is True
    assert old.search_space["dp-size"] == [2, 4]
    assert world_size("sglang", {"tp-size": 8, "dp-size": 4, "enable-dp-attention": True}) == 8
    assert world_size("sglang", {"tp-size": 8, "dp-size": 4}) == 32


def test_a_version_without_the_flag_fails_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        study("vllm", "0.11.0", parallel={"cp": 2})
    message = str(info.value)
    assert "parallel.cp:" in message and "vllm 0.11.0 has no flag" in message
    assert "prefill-context-parallel-size" in message


def test_trtllm_maps_to_trtllm_serve_options_and_refuses_dp() -> None:
    s = study("trtllm", parallel={"tp": [2, 4], "ep": True, "cp": 1})
    assert s.search_space["tp_size"] == [2, 4] and s.layout_ties == {"ep_size": "tp"}
    assert to_argv("trtllm", {"tp_size": 4, "ep_size": 4}) == ["--tp_size", "4",
                                                               "--ep_size", "4"]
    with pytest.raises(ConfigError, match="parallel.dp: TensorRT-LLM has no data parallel"):
        study("trtllm", parallel="high-throughput")
    with pytest.raises(ConfigError, match=r"moe_tp \(2\) × ep \(2\) must equal tp \(8\)"):
        study("trtllm", parallel={"tp": 8, "ep": 2, "moe_tp": 2})


def test_user_native_flags_win_with_a_warning() -> None:
    """A native flag overrides the derived one; the override is warned and listed."""
    with pytest.warns(IntentOverrideWarning, match="fixed_flags.tp-size overrides parallel.tp"):
        s = study("sglang", parallel={"tp": [1, 2]}, fixed_flags={"tp-size": 4})
    assert s.fixed_flags["tp-size"] == 4 and "tp-size" not in s.search_space
    assert any("overrides parallel.tp" in line for line in s.intent_overrides())


def test_validation_is_idempotent_on_the_stored_config() -> None:
    """The stored study (model_dump) validates back to the same flags, silently (it is what
    the trial actors validate)."""
    s = study("sglang", "0.5.19", parallel="moe-optimized", quantization="aggressive-moe")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = StudyConfig.model_validate(s.model_dump(mode="json"))
    assert again.search_space == s.search_space and again.fixed_flags == s.fixed_flags


def test_offline_quantized_checkpoint_is_read_and_protected(tmp_path: Path) -> None:
    """A local AWQ checkpoint: an explicit conflicting --quantization is an error (section or
    native), a preset's fp8 is left out with a note, and the detection is recorded."""
    (tmp_path / "config.json").write_text(json.dumps(
        {"quantization_config": {"quant_method": "AWQ"}}))
    base = {"name": "s", "model": {"name": str(tmp_path)}, "engine": {"name": "vllm"},
            "search_space": {"max-num-seqs": [64]}}
    for extra in ({"quantization": {"weights": "fp8"}},
                  {"quantization": "kv-cache-fp8", "fixed_flags": {"quantization": "gptq"}}):
        with pytest.raises(ConfigError, match="conflicts with the checkpoint's own "
                                              "quantization 'awq'"):
            parse_study({**base, **extra})
    s = parse_study({**base, "quantization": "dynamic-fp8"})
    assert "quantization" not in s.fixed_flags
    assert s.quantization is not None and s.quantization.checkpoint == "awq"
    assert any("left out" in line for line in s.intent_overrides())
    assert parse_study({**base, "quantization": {"weights": "awq_marlin"}}).fixed_flags == {
        "quantization": "awq_marlin"}


@pytest.mark.parametrize("section", [
    {"quantization": {"weights": "--trust-remote-code"}},
    {"quantization": {"kv_cache": "fp8; rm -rf /"}},
    {"parallel": {"tp": "2 --port 1"}},
    {"parallel": {"tp": -1}},
])
def test_hostile_section_values_never_reach_argv(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        study("vllm", **section)


def test_constraints_carry_a_reason_and_a_source() -> None:
    for constraint in CONSTRAINTS:
        assert constraint.reason and "::" in constraint.source, constraint.name


@pytest.mark.parametrize(("engine", "flags", "name"), [
    ("sglang", {"tp-size": 4, "ep-size": 8}, "sglang-ep-divides-tp"),
    ("sglang", {"tp-size": 2, "dp-size": 4, "enable-dp-attention": True},
     "sglang-attention-dp-divides-tp"),
    ("sglang", {"tp-size": 4, "attn-dp-size": 3}, "sglang-attention-dp-divides-tp"),
    ("vllm", {"tensor-parallel-size": 4, "decode-context-parallel-size": 8},
     "vllm-dcp-divides-tp"),
    ("vllm", {"prefill-context-parallel-size": 2, "data-parallel-size": 2},
     "vllm-pcp-without-dp"),
    ("trtllm", {"tp_size": 4, "ep_size": 3}, "trtllm-ep-divides-tp"),
    ("trtllm", {"tp_size": 4, "ep_size": 2, "cp_size": 2}, "trtllm-cp-without-ep"),
])
def test_constraints_rule_out_what_the_engine_refuses(engine: str, flags: dict[str, Any],
                                                      name: str) -> None:
    assert name in [v.constraint.name for v in violations(engine, flags)]


def test_dp_without_attention_dp_is_not_bound_by_tp() -> None:
    """SGLang's tp % dp rule holds only with attention DP: plain replicas are free."""
    assert not violations("sglang", {"tp-size": 2, "dp-size": 4})


@pytest.mark.parametrize(("engine", "flags", "gpus"), [
    ("vllm", {"tp": 4, "decode-context-parallel-size": 4, "enable-expert-parallel": True}, 4),
    ("vllm", {"tp": 2, "dp": 2, "pp": 2}, 8),
    ("vllm", {"tp": 2, "prefill-context-parallel-size": 2}, 4),
    ("sglang", {"tp-size": 8, "ep-size": 8, "attn-dp-size": 8}, 8),
    ("sglang", {"tp-size": 2, "dp-size": 2, "attn-dp-size": 2}, 4),
    ("trtllm", {"tp_size": 4, "ep_size": 4, "cp_size": 2}, 8),
])
def test_world_size_counts_only_dimensions_that_add_gpus(engine: str, flags: dict[str, Any],
                                                         gpus: int) -> None:
    assert world_size(engine, flags) == gpus
