"""The study schema: every error names the field path, the bad value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_study, parse_study
from common.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "s", "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
           "engine": {"name": "vllm", "simulated": True},
           "search_space": {"max-num-seqs": [64, 128]}}


def with_(**sections: object) -> dict:  # type: ignore[type-arg]
    return {**MINIMAL, **sections}


def error_of(data: dict) -> ConfigError:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        parse_study(data)
    return info.value


def test_examples_validate() -> None:
    """Every study file in examples/ loads."""
    files = sorted((REPO / "examples").glob("*.yaml"))
    assert files
    for path in files:
        assert load_study(path).name


def test_defaults_fill_every_section() -> None:
    """A minimal study gets defaults for search, benchmark, objective, cluster and storage."""
    study = parse_study(MINIMAL)
    assert study.search.algorithm == "tpe" and study.objective.maximize
    assert study.benchmark.concurrency == [1, 8, 32]
    assert study.cluster.address == "local" and study.launcher.kind == "process"


@pytest.mark.parametrize("data,path,fragment", [
    (with_(engine={"name": "vlm"}), "engine.name", "'vllm', 'sglang' or 'trtllm'"),
    (with_(search={"algoritm": "grid"}), "search.algoritm", "did you mean 'algorithm'"),
    (with_(search={"max_trials": 0}), "search.max_trials", "greater than or equal to 1"),
    (with_(benchmark={"scenarios": ["Q(1,2)"]}), "benchmark.scenarios", "D(in,out)"),
    (with_(search_space={"mem-fraction-static": {"low": 0.9, "high": 0.5}}),
     "search_space.mem-fraction-static", "high (0.5) must be >= low (0.9)"),
    (with_(objective={"metric": "ttft", "per_gpu": True}), "objective", "throughput"),
    (with_(engine={"name": "trtllm"}, search_space={"dp-size": [1, 2]}),
     "search_space.dp-size", "no data parallelism"),
    (with_(fixed_flags={"port": 9000}), "fixed_flags.port", "set by servetune"),
    (with_(search_space={"tp": [1, 2.5]}), "search_space.tp", "integers"),
    (with_(search_space={"max-num-seq": [1]}), "search_space.max-num-seq",
     "did you mean 'max-num-seqs'"),
    (with_(parallel={"tp": [1, "x"]}), "parallel.tp.1", "valid integer"),
    (with_(quantization={"weights": "--x"}), "quantization.weights", "pattern"),
    (with_(parallel="huge"), "parallel.preset", "'single-gpu'"),
    (with_(engine={"name": "sglang"}, search_space={"max-running-requests": [8]},
           quantization={"kv_cache": "fp9"}), "quantization.kv_cache", "'fp8_e4m3'"),
    (with_(name="has space"), "name", "pattern"),
])
def test_errors_name_the_path_value_and_allowed(data, path: str, fragment: str) -> None:
    """A bad field is reported with its dotted path and a hint of what is allowed."""
    message = str(error_of(data))
    assert f"{path}:" in message and fragment in message


def test_cross_field_errors_show_their_own_path_not_the_whole_study() -> None:
    """Registry and cross-field errors are reported under the flag's path, one per line,
    without "(top level)" or a dump of the whole study as the value."""
    message = str(error_of(with_(search_space={"max-num-seq": [1]})))
    assert "(top level)" not in message and "'name': 's'" not in message
    assert "search_space.max-num-seq:" in message


def test_all_problems_are_reported_at_once() -> None:
    """Several bad fields → one error listing each of them."""
    message = str(error_of(with_(engine={"name": "x"}, search={"max_trials": -1},
                                 benchmak={})))
    assert "3 problem(s)" in message
    assert "did you mean 'benchmark'" in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    """A missing file or invalid YAML is a ConfigError naming the file, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_study(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_study(listed)


def test_asha_needs_one_objective_and_several_levels() -> None:
    multi = error_of({**MINIMAL, "search": {"scheduler": "asha"},
                      "objective": {"pareto_with": [{"metric": "ttft", "statistic": "p90"}]}})
    assert "search.scheduler: asha" in str(multi) and "multi-objective" in str(multi)
    single = error_of({**MINIMAL, "search": {"scheduler": "asha"},
                       "benchmark": {"concurrency": [8]}})
    assert "at least two levels" in str(single)
    ok = parse_study({**MINIMAL, "search": {"scheduler": "asha", "reduction_factor": 2}})
    assert ok.search.scheduler == "asha" and ok.search.grace_levels == 1
    bad = error_of({**MINIMAL, "search": {"scheduler": "hyperband"}})
    assert "search.scheduler" in str(bad) and "asha" in str(bad)
