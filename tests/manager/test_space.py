"""Search plans: joint parallel layouts, infeasible pruning, grids and Tune domains."""

from __future__ import annotations

import pytest

from common.config import parse_study
from common.errors import ConfigError
from common.params import to_argv, world_size
from manager.space import PARALLEL_PARAM, build_plan, describe, trial_flags


def study(space: dict, algorithm: str = "tpe", fixed: dict | None = None,  # type: ignore[type-arg]
          engine: str = "sglang", max_trials: int = 50):  # type: ignore[no-untyped-def]
    return parse_study({"name": "t", "model": {"name": "m"}, "engine": {"name": engine},
                        "search_space": space, "fixed_flags": fixed or {},
                        "search": {"algorithm": algorithm, "max_trials": max_trials}})


def test_layouts_needing_more_gpus_than_a_node_are_pruned() -> None:
    """tp × dp combinations above the largest node's GPUs never reach Tune."""
    plan = build_plan(study({"tp-size": [1, 2, 4, 8], "dp-size": [1, 2]}), max_node_gpus=8)
    assert len(plan.layouts) == 7
    assert [pruned.gpus for pruned in plan.infeasible] == [16]
    assert plan.gpu_counts == [1, 2, 4, 8]
    assert any("needs 16 GPUs > 8" in line for line in describe(plan))


def test_a_study_where_nothing_fits_is_rejected_naming_config_and_limit() -> None:
    """If no layout fits, the error names the smallest layout, its GPUs and the node's."""
    with pytest.raises(ConfigError) as info:
        build_plan(study({"tp-size": [8, 16]}, fixed={"pp-size": 2}), max_node_gpus=8)
    message = str(info.value)
    assert "tp-size=8" in message and "16 GPUs" in message and "(8 GPUs)" in message


def test_grid_expands_lists_and_stepped_ranges_and_is_cut_at_max_trials() -> None:
    """Grid = every combination, in order; more points than max_trials are cut."""
    plan = build_plan(study({"tp-size": [1, 2], "mem-fraction-static":
                             {"low": 0.8, "high": 0.9, "step": 0.05}}, "grid", max_trials=5),
                      max_node_gpus=8)
    assert plan.truncated_from == 6 and len(plan.grid_points or []) == 5
    first = trial_flags(plan_study := study({"tp-size": [1, 2]}, "grid"), plan,
                        plan.grid_points[0])  # type: ignore[index]
    assert first == {"tp-size": 1, "mem-fraction-static": 0.8}
    assert plan_study.engine.name == "sglang"


def test_grid_rejects_a_continuous_range() -> None:
    with pytest.raises(ConfigError, match="grid search needs a list or a range with a step"):
        build_plan(study({"mem-fraction-static": {"low": 0.8, "high": 0.9}}, "grid"), 8)


def test_random_and_tpe_get_tune_domains() -> None:
    """Lists → choice, integer ranges → integer domains, float ranges → (log-)uniform."""
    plan = build_plan(study({"tp-size": [1, 2], "max-running-requests":
                             {"low": 16, "high": 256, "log": True},
                             "mem-fraction-static": {"low": 0.7, "high": 0.9}}), 8)
    space = plan.param_space
    assert set(space) == {PARALLEL_PARAM, "max-running-requests", "mem-fraction-static"}
    assert type(space["max-running-requests"]).__name__ == "Integer"
    assert type(space["mem-fraction-static"]).__name__ == "Float"
    assert plan.size is None


def test_trial_flags_expand_the_layout_and_keep_fixed_flags() -> None:
    """A sampled config becomes engine flags; GPU count and argv follow from them."""
    s = study({"tp-size": [2], "dp-size": [2], "chunked-prefill-size": [4096]},
              fixed={"schedule-policy": "lpm"})
    plan = build_plan(s, 8)
    flags = trial_flags(s, plan, {PARALLEL_PARAM: "tp-size=2,dp-size=2",
                                  "chunked-prefill-size": 4096})
    assert world_size("sglang", flags) == 4
    assert to_argv("sglang", flags) == ["--schedule-policy", "lpm", "--tp-size", "2",
                                        "--dp-size", "2", "--chunked-prefill-size", "4096"]


def test_argv_spells_booleans_per_engine() -> None:
    """vLLM booleans: --flag / --no-flag; SGLang store-true flags: present or absent."""
    assert to_argv("vllm", {"enable-prefix-caching": False, "enforce-eager": True}) == [
        "--no-enable-prefix-caching", "--enforce-eager"]
    assert to_argv("sglang", {"disable-radix-cache": False}) == []
    assert to_argv("vllm", {"gpu-memory-utilization": 0.9000000000000001}) == [
        "--gpu-memory-utilization", "0.9"]


def test_preflight_rejects_a_model_the_simulator_does_not_know() -> None:
    """A simulated study of an unknown model fails before Ray, listing the known models."""
    from manager.preflight import preflight

    s = parse_study({"name": "t", "model": {"name": "acme/Nope-9B"},
                     "engine": {"name": "vllm", "simulated": True},
                     "search_space": {"max-num-seqs": [8]}})
    with pytest.raises(ConfigError, match="model.name: unknown model 'acme/Nope-9B'"):
        preflight(s)


def test_layouts_an_engine_constraint_rules_out_are_pruned_with_the_constraint() -> None:
    """Native parallel flags too: SGLang ep-size must divide tp-size; each pruned layout keeps
    the constraint that removed it, and the remaining ones their GPU count."""
    plan = build_plan(study({"tp-size": [2, 4], "ep-size": [1, 4]}), max_node_gpus=8)
    assert set(plan.layouts) == {"tp-size=2,ep-size=1", "tp-size=4,ep-size=1",
                                 "tp-size=4,ep-size=4"}
    [pruned] = plan.infeasible
    assert pruned.combo == {"tp-size": 2, "ep-size": 4}
    assert pruned.reason.startswith("sglang-ep-divides-tp")
    assert plan.layout_gpus == {"tp-size=2,ep-size=1": 2, "tp-size=4,ep-size=1": 4,
                                "tp-size=4,ep-size=4": 4}


def test_fixed_flags_that_break_a_constraint_leave_no_layout() -> None:
    with pytest.raises(ConfigError, match="no parallel layout is valid.*sglang-ep-divides-tp"):
        build_plan(study({"max-running-requests": [8]}, fixed={"tp-size": 2, "ep-size": 4}), 8)


def test_tied_flags_follow_the_dimension_in_every_layout() -> None:
    """SGLang ``parallel.ep: true``: ep-size takes tp-size's value in each layout."""
    s = parse_study({"name": "t", "model": {"name": "m"}, "engine": {"name": "sglang"},
                     "parallel": {"tp": [2, 4], "ep": True},
                     "search_space": {"max-running-requests": [8]}})
    plan = build_plan(s, 8)
    assert list(plan.layouts.values()) == [{"tp-size": 2, "ep-size": 2},
                                           {"tp-size": 4, "ep-size": 4}]


def test_attention_dp_layouts_count_the_tp_gpus_only() -> None:
    """With --enable-dp-attention, dp-size divides the tp GPUs instead of adding replicas."""
    plan = build_plan(study({"tp-size": [8], "dp-size": [2, 8]},
                            fixed={"enable-dp-attention": True}), 8)
    assert plan.gpu_counts == [8] and not plan.infeasible
