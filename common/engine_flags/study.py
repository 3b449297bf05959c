"""A study's engine flags checked against the engine version's registry, before any trial.

``check_study_flags`` is what ``StudyConfig`` calls: it returns every problem as one line that
starts with the field path (``search_space.<flag>: ...`` / ``fixed_flags.<flag>: ...``), so the
config can report them all at once. The rules:

- a flag the engine's parser does not define is an error, with the closest valid spelling;
- each categorical value and each fixed value must fit the flag's type, choices and arity;
- a numeric range needs an int or float flag without choices, and an integer flag needs an
  integer range (whole-number low, high and step);
- security flags (``common/engine_flags/security.py``) are refused in the search space; they
  are allowed in fixed_flags, where the study sets them on purpose, except credentials
  (``api-key``, ``hf-token``, ...), which a study file never holds;
- the simulated engine takes the real engine's flags plus its own ``sim-*`` flags;
- TensorRT-LLM has no registry yet: only the security rule applies to it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Protocol

from common.engine_flags.registry import REGISTRY_ENGINES, FlagRegistry, registry
from common.engine_flags.security import is_credential, security_reason
from common.engine_flags.sim import SIM_FLAGS, SIM_PREFIX, sim_flag
from common.engine_flags.spec import FlagSpec, FlagValueError
from common.errors import ConfigError


class RangeLike(Protocol):
    """What a numeric search range offers (``common.config.NumericRange``)."""

    low: float
    high: float
    step: float | None

    @property
    def is_int(self) -> bool: ...


def check_study_flags(engine: str, version: str | None, search_space: Mapping[str, Any],
                      fixed_flags: Mapping[str, Any], *, simulated: bool = False,
                      other: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Every problem with a study's flags, one line each (empty when all is well).

    ``search_space`` maps flag names (no leading dashes) to a list of values or a numeric
    range; ``fixed_flags`` maps them to a value or a list of values. ``other`` maps the path
    of further flag sets (``search.baseline_flags``) to flags checked like fixed ones, except
    that security flags are refused there too (only ``fixed_flags`` sets them)."""
    try:
        reg = registry(engine, version) if engine in REGISTRY_ENGINES else None
    except ConfigError as e:
        return [f"engine.version: {e}"]
    problems: list[str] = []
    seen: dict[str, str] = {}
    sections = [("search_space", search_space), ("fixed_flags", fixed_flags),
                *(other or {}).items()]
    for section, flags in sections:
        for name, value in flags.items():
            path = f"{section}.{name}"
            spec, problem = _find(reg, name, simulated)
            if problem is not None:
                problems.append(f"{path}: {problem}")
                continue
            canonical = spec.name if spec else name
            reason = security_reason(canonical)
            if reason and is_credential(canonical):
                problems.append(f"{path}: --{canonical} is a credential: it never belongs in "
                                "the study file (the study is stored with its results); give "
                                "it to the engine through its environment (launcher.pass_env)")
                continue
            if reason and section != "fixed_flags":
                problems.append(f"{path}: {_refused(canonical, reason)}")
                continue
            if spec is None:  # no registry (trtllm): names are the engine's business
                continue
            if section in ("search_space", "fixed_flags"):
                if spec.name in seen:
                    problems.append(f"{path}: names the same flag as {seen[spec.name]} "
                                    f"(--{spec.name}); keep one")
                    continue
                seen[spec.name] = path
            problems += [f"{path}: {p}" for p in _check_value(spec, section, value)]
    return problems


def _find(reg: FlagRegistry | None, name: str,
          simulated: bool) -> tuple[FlagSpec | None, str | None]:
    if simulated and name.lstrip("-").startswith(SIM_PREFIX):
        spec = sim_flag(name)
        if spec is not None:
            return spec, None
        hint = difflib.get_close_matches(name.lstrip("-"), list(SIM_FLAGS), n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        return None, f"not a flag of the simulated engine{did_you_mean}"
    if reg is None:
        return None, None
    spec = reg.lookup(name)
    if spec is None:
        return None, str(reg.unknown(name))
    return spec, None


def _check_value(spec: FlagSpec, section: str, value: Any) -> list[str]:
    if section == "search_space":
        if _is_range(value):
            return _check_range(spec, value)
        problems = []
        for item in value:
            try:
                spec.validate(item)
            except FlagValueError as e:
                problems.append(str(e))
        return problems
    try:
        spec.validate(value)
    except FlagValueError as e:
        return [str(e)]
    return []


def _check_range(spec: FlagSpec, value: RangeLike) -> list[str]:
    if not spec.is_numeric:
        return [f"--{spec.name}: a numeric range needs an integer or number flag; this one "
                f"takes {spec.allowed()} (give a list of values instead)"]
    if spec.value_type == "int" and not value.is_int:
        return [f"--{spec.name} takes integers: a range over it needs whole-number low, high "
                f"and step (got low={value.low}, high={value.high}, step={value.step})"]
    return []


def _is_range(value: Any) -> bool:
    return all(hasattr(value, attr) for attr in ("low", "high", "step"))


def _refused(name: str, reason: str) -> str:
    return (f"--{name} {reason}; it is never searched: set it in fixed_flags if the study "
            "means it")
