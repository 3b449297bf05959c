"""Engine flag registries: lookups, value checks, argv that the engines' parsers read back.

"The engines' parsers" here are parsers rebuilt from the checked-in registry data
(``common.engine_flags.parser``), which scripts/refresh_engine_flags.py extracted from each
release's own argparse definitions; no flag list is copied into these tests.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from common.config import NumericRange, load_study, parse_study
from common.engine_flags import (
    REGISTRY_ENGINES,
    SECURITY_FLAGS,
    SIM_FLAGS,
    FlagSpec,
    FlagValueError,
    UnknownFlagError,
    available_versions,
    check_study_flags,
    registry,
)
from common.engine_flags.parser import FlagArgvError, build_parser, dest, parse_argv
from common.engine_flags.security import REVIEWED_NOT_SECURITY, looks_sensitive
from common.errors import ConfigError
from common.params import to_argv

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "common" / "engine_flags" / "data"
REGISTRIES = [(e, v) for e in REGISTRY_ENGINES for v in available_versions(e)]
IDS = [f"{e}-{v}" for e, v in REGISTRIES]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def study(engine: str, space: dict[str, Any], fixed: dict[str, Any] | None = None,
          **engine_fields: Any) -> dict[str, Any]:
    return {"name": "s", "model": {"name": MODEL},
            "engine": {"name": engine, **engine_fields},
            "search_space": space, "fixed_flags": fixed or {}}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_study(data)
    return str(info.value)


# --- the registry files ---------------------------------------------------------------------

def test_every_engine_has_a_registry() -> None:
    """vLLM and SGLang each have at least one checked-in version; None picks the newest."""
    for engine in REGISTRY_ENGINES:
        versions = available_versions(engine)
        assert versions, engine
        assert registry(engine).version == versions[-1]


@pytest.mark.parametrize(("engine", "version"), REGISTRIES, ids=IDS)
def test_registry_file_records_its_source_and_is_stable(engine: str, version: str) -> None:
    """Each file names the engine version, the wheel and its sha256 and the extraction date,
    and is written sorted (a refresh diff shows only what the release changed)."""
    path = DATA / f"{engine}-{version}.json"
    text = path.read_text()
    data = json.loads(text)
    assert (data["engine"], data["version"]) == (engine, version)
    assert data["source"]["wheel"].startswith(f"{engine}-{version}-")
    assert len(data["source"]["sha256"]) == 64
    assert data["extracted_on"][:2] == "20"
    assert text == json.dumps(data, indent=1, sort_keys=True) + "\n"
    reg = registry(engine, version)
    assert len(reg) > 100
    assert sum(1 for spec in reg if spec.help) > 0.9 * len(reg)  # help texts were read


def test_unknown_version_lists_the_available_ones() -> None:
    """A version without a registry is a ConfigError naming the versions there are and the
    command that adds one."""
    with pytest.raises(ConfigError) as info:
        registry("vllm", "0.0.1")
    message = str(info.value)
    assert "0.0.1" in message and registry("vllm").version in message
    assert "scripts/refresh_engine_flags.py vllm 0.0.1" in message
    with pytest.raises(ConfigError, match="no flag registry"):
        registry("trtllm")


# --- spellings ------------------------------------------------------------------------------

def test_aliases_and_spellings_resolve_to_one_flag() -> None:
    """vLLM: short aliases (-tp), dashes optional, underscores as its parser reads them, and
    the negative spellings of a boolean pair; SGLang: aliases, but no underscore spelling."""
    vllm = registry("vllm")
    tp = vllm.flag("tensor-parallel-size")
    assert "-tp" in tp.options
    for spelling in ("-tp", "tp", "--tensor-parallel-size", "tensor_parallel_size",
                     "--tensor_parallel_size"):
        assert vllm.flag(spelling) is tp, spelling
    negated = vllm.resolve("no-enable-prefix-caching")
    assert negated is not None and negated.negated
    assert negated.spec.name == "enable-prefix-caching"
    sglang = registry("sglang")
    assert sglang.flag("--tp-size") is sglang.flag("tensor-parallel-size")
    assert sglang.lookup("max_running_requests") is None
    assert sglang.suggest("max_running_requests") == "max-running-requests"


def test_unknown_flag_suggests_the_closest_valid_one() -> None:
    """A typo is an UnknownFlagError whose message names the flag, the engine version and the
    closest valid name."""
    reg = registry("vllm")
    with pytest.raises(UnknownFlagError) as info:
        reg.flag("max-num-seq")
    assert "'max-num-seq' is not a flag of vllm" in str(info.value)
    assert "did you mean 'max-num-seqs'?" in str(info.value)
    assert reg.suggest("zzzz-qqqq-xxxx") is None


# --- values ---------------------------------------------------------------------------------

def _first(reg_engine: str, predicate: Any) -> FlagSpec:
    return next(spec for spec in registry(reg_engine) if predicate(spec))


@pytest.mark.parametrize("engine", REGISTRY_ENGINES)
def test_types_and_choices_are_enforced(engine: str) -> None:
    """Integers, numbers and choices reject values of another type, naming the flag, the value
    and what is allowed; a near-miss choice gets a did-you-mean."""
    int_flag = _first(engine, lambda s: s.kind == "store" and s.value_type == "int"
                      and s.choices is None and not s.takes_list and not s.words)
    assert int_flag.validate(8) == 8 and int_flag.validate(8.0) == 8
    for bad in (1.5, "eight", True, [1, 2]):
        with pytest.raises(FlagValueError) as info:
            int_flag.validate(bad)
        assert int_flag.flag in str(info.value) and "an integer" in str(info.value)
    float_flag = _first(engine, lambda s: s.kind == "store" and s.value_type == "float"
                        and s.choices is None and not s.takes_list)
    assert float_flag.validate(1) == 1.0
    with pytest.raises(FlagValueError, match="a number"):
        float_flag.validate("half")
    choice_flag = _first(engine, lambda s: s.choices is not None and len(s.choices) > 2
                         and all(isinstance(c, str) and len(c) > 3 for c in s.choices))
    good = choice_flag.choices[0]
    assert choice_flag.validate(good) == good
    with pytest.raises(FlagValueError) as info:
        choice_flag.validate(good + "x")
    assert f"did you mean {good!r}?" in str(info.value) and "one of" in str(info.value)


def test_booleans_are_spelled_as_the_parser_defines_them() -> None:
    """--x/--no-x pairs: true and false both spelled; store-true switches: present or absent;
    a switch that is on by default cannot be set false (the error says so)."""
    vllm = registry("vllm").flag("enable-prefix-caching")
    assert vllm.kind == "boolean_optional"
    assert vllm.argv(True) == ["--enable-prefix-caching"]
    assert vllm.argv(False) == ["--no-enable-prefix-caching"]
    switch = _first("sglang", lambda s: s.kind == "store_true" and s.default is not True)
    assert switch.argv(True) == [switch.flag] and switch.argv(False) == []
    with pytest.raises(FlagValueError):
        switch.validate("yes")
    always_on = FlagSpec(name="x", options=("--x",), kind="store_true", default=True)
    assert always_on.validate(True) is True
    with pytest.raises(FlagValueError, match="on by default and has no off switch"):
        always_on.validate(False)


# --- argv the engines' parsers read back ------------------------------------------------------

def _samples(spec: FlagSpec) -> list[Any]:
    """Values of the flag's own type (and each spelling of a boolean) to round-trip."""
    if spec.kind == "boolean_optional":
        return [True, False]
    if spec.is_switch:
        return [True] + ([] if spec.kind == "store_true" and spec.default is True else [False])
    if spec.kind == "count":
        return [2]
    if spec.choices:
        one = [spec.choices[0], spec.choices[-1]]
    else:
        one = {"int": [7, -1], "float": [0.5], "bool": [True, False], "json": ['{"a": 1}'],
               "str": ["a value with spaces"]}[spec.value_type or "str"] + list(spec.words)
    if isinstance(spec.nargs, int) and spec.nargs > 1:
        return [[one[0]] * spec.nargs]
    if spec.takes_list:
        return [*one, [one[0], one[-1]]]
    return one


def _parsed(spec: FlagSpec, value: Any) -> Any:
    """What the engine's parser stores for ``value``."""
    if spec.kind == "store_const":
        return spec.const if value else spec.default
    if spec.kind == "store_false":
        return False if value else spec.default
    if spec.kind == "store_true":
        return True if value else spec.default
    if isinstance(value, list):
        return [spec.validate(v) for v in value]
    normal = spec.validate(value)
    if spec.kind == "append" or spec.nargs in ("+", "*"):
        return [normal]
    return normal


@pytest.mark.parametrize(("engine", "version"), REGISTRIES, ids=IDS)
def test_argv_of_every_flag_parses_with_the_engine_parser(engine: str, version: str) -> None:
    """For every flag of every registry and values of each of its forms (both booleans,
    choices, numbers, strings with spaces, lists), to_argv's items parse with the parser
    rebuilt from the registry into exactly the value given."""
    reg = registry(engine, version)
    parser = build_parser(reg)
    dests = Counter(dest(spec) for spec in reg)
    samples = {spec.name: _samples(spec) for spec in reg}
    checked = 0
    # One argv per round holds the round's value of every flag with a namespace slot of its
    # own (fast); flags sharing a slot (deprecated aliases) are parsed alone.
    for round_ in range(max(len(values) for values in samples.values())):
        batch = {spec.name: samples[spec.name][round_] for spec in reg
                 if round_ < len(samples[spec.name]) and dests[dest(spec)] == 1}
        ns = parser.parse_args(to_argv(engine, batch, version=version))
        for name, value in batch.items():
            spec = reg.flag(name)
            assert getattr(ns, dest(spec)) == _parsed(spec, value), (name, value)
            checked += 1
    for spec in reg:
        if dests[dest(spec)] > 1:
            for value in samples[spec.name]:
                argv = to_argv(engine, {spec.name: value}, version=version)
                ns = parser.parse_args(argv)
                assert getattr(ns, dest(spec)) == _parsed(spec, value), (spec.name, argv)
                checked += 1
    assert checked > len(reg)


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_studies_emit_argv_the_engine_parses(path: Path) -> None:
    """Each example's fixed flags and every value its search space can take (list items, the
    ends and grid of ranges) become argv that its engine version's parser accepts."""
    study_ = load_study(path)
    engine, version = study_.engine.name, study_.engine.version
    if engine not in REGISTRY_ENGINES:
        pytest.skip(f"{engine} has no registry yet")
    parser = build_parser(registry(engine, version),
                          SIM_FLAGS.values() if study_.engine.simulated else ())
    first: dict[str, Any] = dict(study_.fixed_flags)
    for flag, spec in study_.search_space.items():
        if isinstance(spec, NumericRange):
            values: list[Any] = [spec.low, spec.high] + (spec.grid() if spec.step else [])
            if spec.is_int:
                values = [int(v) for v in values]
        else:
            values = list(spec)
        first[flag] = values[0]
        for value in values:
            parser.parse_args(to_argv(engine, {flag: value}, version=version))
    parser.parse_args(to_argv(engine, first, version=version))


def test_rebuilt_parser_rejects_what_the_engine_would() -> None:
    """The rebuilt parser is strict: unknown flags, bad choices and non-numbers fail."""
    reg = registry("vllm")
    for argv in (["--max-num-seq", "8"], ["--max-num-seqs", "eight"],
                 ["--dtype", "float17"]):
        with pytest.raises(FlagArgvError):
            parse_argv(reg, argv)


# --- hostile values ---------------------------------------------------------------------------

@pytest.mark.parametrize("engine", REGISTRY_ENGINES)
def test_values_cannot_inject_flags(engine: str) -> None:
    """A value with spaces or a leading '--' stays one argv item: a string flag reads it as
    its value (and the study check rejects the leading dash), a numeric flag rejects it, a
    list item that could read as a flag is refused."""
    reg = registry(engine)
    text = _first(engine, lambda s: s.kind == "store" and s.value_type == "str"
                  and s.choices is None and not s.takes_list and s.nargs is None
                  and not s.name.startswith("sim-"))
    trust = reg.flag("trust-remote-code")
    for hostile in ("--trust-remote-code", "x --trust-remote-code", "a b;rm -rf /"):
        argv = to_argv(engine, {text.name: hostile})
        assert len(argv) <= 2 and hostile in argv[-1]
        ns = parse_argv(reg, argv)
        assert getattr(ns, dest(text)) == hostile
        assert getattr(ns, dest(trust)) in (False, None)
    with pytest.raises(FlagValueError, match="must not start with '-'"):
        text.validate("--trust-remote-code")
    number = _first(engine, lambda s: s.kind == "store" and s.value_type == "int"
                    and s.choices is None and not s.takes_list and not s.words)
    for hostile in ("8 --trust-remote-code", "--trust-remote-code", "8;ls"):
        with pytest.raises(FlagValueError):
            number.validate(hostile)
    listed = _first(engine, lambda s: s.nargs == "+" and s.value_type == "str")
    with pytest.raises(FlagValueError):
        listed.validate(["ok", "--trust-remote-code"])
    with pytest.raises(FlagValueError):
        listed.argv(["ok", "--trust-remote-code"])


# --- security flags ---------------------------------------------------------------------------

def test_security_flags_exist_and_sensitive_names_were_reviewed() -> None:
    """Every listed security flag is a flag of some registry, and every registry flag whose
    name looks sensitive is either listed or reviewed as harmless (a refresh that adds such a
    flag fails here until someone classifies it)."""
    names = {spec.name for e, v in REGISTRIES for spec in registry(e, v)}
    assert sorted(set(SECURITY_FLAGS) - names) == []
    unreviewed = sorted(n for n in names if looks_sensitive(n) and n not in SECURITY_FLAGS
                        and n not in REVIEWED_NOT_SECURITY)
    assert unreviewed == []
    for required in ("trust-remote-code", "api-key", "download-dir", "host",
                     "allowed-local-media-path", "ssl-keyfile", "ssl-certfile", "hf-token"):
        assert required in SECURITY_FLAGS


@pytest.mark.parametrize("engine", REGISTRY_ENGINES)
def test_security_flags_are_refused_in_search_space_and_allowed_fixed(engine: str) -> None:
    """trust-remote-code (any spelling) cannot be searched; fixed_flags may set it."""
    message = error_of(study(engine, {"trust-remote-code": [True, False]}))
    assert "search_space.trust-remote-code: --trust-remote-code runs Python code" in message
    assert "fixed_flags" in message
    tp = "tensor-parallel-size" if engine == "vllm" else "tp-size"
    ok = parse_study(study(engine, {tp: [1, 2]}, {"trust-remote-code": True}))
    assert ok.fixed_flags["trust-remote-code"] is True
    if engine == "vllm":
        assert "search_space.trust_remote_code" in error_of(
            study(engine, {"trust_remote_code": [True]}))


@pytest.mark.parametrize("engine", REGISTRY_ENGINES)
def test_credentials_are_refused_even_in_fixed_flags(engine: str) -> None:
    """api-key and hf-token-like flags cannot be set anywhere in a study (it is stored with
    its results); the error points to the environment instead."""
    message = error_of(study(engine, {"max-running-requests" if engine == "sglang"
                                      else "max-num-seqs": [8]}, {"api-key": "sk-secret"}))
    assert "fixed_flags.api-key: --api-key is a credential" in message
    assert "launcher.pass_env" in message and "sk-secret" not in message.split("(got")[0]


# --- the study check --------------------------------------------------------------------------

def test_study_errors_name_the_path_the_value_and_a_fix() -> None:
    """Unknown flags, bad categorical and fixed values, and ranges that do not fit the flag's
    type are reported together, each under its own field path."""
    message = error_of(study("vllm", {
        "max-num-seq": [8],
        "dtype": ["float16", "float17"],
        "max-num-seqs": {"low": 1.5, "high": 64},
        "kv-cache-dtype": {"low": 1, "high": 2},
    }, {"enforce-eager": "yes", "gpu-memory-utilization": "most"}))
    assert "search_space.max-num-seq: 'max-num-seq' is not a flag of vllm" in message
    assert "did you mean 'max-num-seqs'?" in message
    assert "search_space.dtype: --dtype: 'float17' is not valid" in message
    assert "search_space.max-num-seqs: --max-num-seqs takes integers" in message
    assert "search_space.kv-cache-dtype: --kv-cache-dtype: a numeric range needs" in message
    assert "fixed_flags.enforce-eager: --enforce-eager: 'yes' is not valid" in message
    assert "fixed_flags.gpu-memory-utilization" in message


def test_two_spellings_of_one_flag_are_one_flag() -> None:
    """Searching -tp and fixing --tensor-parallel-size names the same flag twice: an error."""
    message = error_of(study("vllm", {"tp": [1, 2]}, {"tensor-parallel-size": 2}))
    assert "fixed_flags.tensor-parallel-size: names the same flag as search_space.tp" in message


def test_study_version_selects_the_registry() -> None:
    """engine.version picks the registry; one that is not checked in is reported under
    engine.version with the available versions."""
    version = registry("vllm").version
    parse_study(study("vllm", {"max-num-seqs": [8]}, version=version))
    message = error_of(study("vllm", {"max-num-seqs": [8]}, version="0.0.1"))
    assert "engine.version: vllm '0.0.1' has no checked-in flag registry" in message


def test_simulated_engine_takes_real_flags_and_its_own() -> None:
    """engine.simulated: the real engine's registry plus the sim-* flags (with did-you-mean);
    without simulated, sim-* flags are unknown."""
    space = {"max-num-seqs": [8, 16]}
    fixed = {"sim-noise": 0.1, "sim-hang-at-startup": False, "sim-http-error-status": 503}
    parse_study(study("vllm", space, fixed, simulated=True))
    message = error_of(study("vllm", space, {"sim-nosie": 0.1}, simulated=True))
    assert "did you mean 'sim-noise'?" in message
    assert "not a flag of vllm" in error_of(study("vllm", space, {"sim-noise": 0.1}))
    bad = check_study_flags("sglang", None, {}, {"sim-http-error-status": 404}, simulated=True)
    assert len(bad) == 1 and "one of 429, 500, 503" in bad[0]


def test_trtllm_has_no_registry_but_keeps_the_security_rule() -> None:
    """TensorRT-LLM flags are not checked by name yet; security flags are still refused."""
    assert check_study_flags("trtllm", None, {"max_batch_size": [8, 16]}, {}) == []
    refused = check_study_flags("trtllm", None, {"trust_remote_code": [True]}, {})
    assert len(refused) == 1 and "search_space.trust_remote_code" in refused[0]


# --- the simulated engine's parser ------------------------------------------------------------

def _sim_parsers() -> dict[str, Any]:
    from worker.sim import engine_args

    return {"vllm": engine_args._vllm_parser(), "sglang": engine_args._sglang_parser()}


def test_simulator_models_only_flags_and_values_the_engine_has() -> None:
    """Every flag the simulator understands is a flag of some checked-in version of its
    engine, and every choice it offers is taken by some version (it invents neither)."""
    for engine, sim in _sim_parsers().items():
        versions = [registry(engine, v) for v in available_versions(engine)]
        for action in (a for a in sim._actions if a.option_strings):
            specs = [spec for reg in versions for option in action.option_strings
                     if (spec := reg.lookup(option)) is not None]
            assert specs, (engine, action.option_strings)
            for choice in action.choices or ():
                assert any(spec.choices is None or choice in spec.choices
                           for spec in specs), (engine, action.option_strings, choice)


@pytest.mark.parametrize(("engine", "version"), REGISTRIES, ids=IDS)
def test_simulator_accepts_the_registry_spelling_of_what_it_models(engine: str,
                                                                   version: str) -> None:
    """For each flag the simulator models that this engine version has, argv spelled from the
    registry reaches the simulator's setting (not its ignored list)."""
    from worker.sim.engine_args import parse_engine_argv

    reg = registry(engine, version)
    sim = _sim_parsers()[engine]
    model = [MODEL] if engine == "vllm" else ["--model-path", MODEL]
    modelled = 0
    for action in sim._actions:
        if not action.option_strings or action.dest in ("model", "model_path", "model_tag"):
            continue
        spec = reg.lookup(action.option_strings[0])
        if spec is None:  # a flag of another version of this engine
            continue
        value: Any
        if spec.is_boolean:
            value = True
        elif action.choices is not None:
            # A value both accept (the simulator's choices may span several versions).
            value = next(c for c in action.choices if spec.choices is None
                         or c in spec.choices)
        else:
            value = {"int": 2, "float": 0.5}.get(spec.value_type or "str", "x")
        argv = to_argv(engine, {spec.name: value}, version=version)
        args, _ = parse_engine_argv(["--engine", engine, *model, *argv])
        assert not set(argv) & set(args.ignored_flags), (spec.name, argv)
        modelled += 1
    assert modelled >= 10


def test_sim_flags_match_the_simulator_parser() -> None:
    """SIM_FLAGS lists exactly the simulator's --sim-* options, with their kinds and choices."""
    from worker.sim import engine_args

    parser = engine_args._Parser(add_help=False)
    engine_args._add_sim_options(parser)
    actions = {a.option_strings[0].lstrip("-"): a for a in parser._actions}
    assert set(actions) == set(SIM_FLAGS)
    for name, spec in SIM_FLAGS.items():
        action = actions[name]
        assert (action.nargs == 0) == spec.is_switch, name
        if action.choices is not None:
            assert tuple(action.choices) == spec.choices, name


# --- the documentation ------------------------------------------------------------------------

def test_engine_parameters_doc_lists_every_registry_and_security_flag() -> None:
    """docs/engine-parameters.md names each checked-in version with its flag count, and every
    security flag (the doc cannot fall behind a refresh or a change of the list)."""
    doc = (REPO / "docs" / "engine-parameters.md").read_text()
    for engine, version in REGISTRIES:
        assert f"| `{engine}` | `{version}` | {len(registry(engine, version))} |" in doc
    missing = [name for name in SECURITY_FLAGS if f"`{name}`" not in doc]
    assert missing == []
