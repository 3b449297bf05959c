"""Engine flag registries: every server flag of vLLM and SGLang, per released version.

The registries are data (``data/<engine>-<version>.json``) extracted from each release's own
argument parser by ``scripts/refresh_engine_flags.py``; this package loads them, finds a flag
by any of its spellings, checks values against the flag's type and choices, spells values as
argv items, and lists the flags that change trust or security. It imports nothing heavy (no
engine, no torch): the API image and the study validator use it. See docs/engine-parameters.md.
"""

from common.engine_flags.registry import (
    REGISTRY_ENGINES,
    FlagRegistry,
    Resolved,
    UnknownFlagError,
    available_versions,
    registry,
)
from common.engine_flags.security import SECURITY_FLAGS, security_reason
from common.engine_flags.sim import SIM_FLAGS, sim_flag
from common.engine_flags.spec import FlagSpec, FlagValueError, format_value
from common.engine_flags.study import check_study_flags

__all__ = [
    "REGISTRY_ENGINES",
    "SECURITY_FLAGS",
    "SIM_FLAGS",
    "FlagRegistry",
    "FlagSpec",
    "FlagValueError",
    "Resolved",
    "UnknownFlagError",
    "available_versions",
    "check_study_flags",
    "format_value",
    "registry",
    "security_reason",
    "sim_flag",
]
