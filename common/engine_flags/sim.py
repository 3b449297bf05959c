"""The simulated engine's own ``--sim-*`` flags, as registry entries.

The simulator (``worker/sim``) accepts the real engine's flags plus these; ``common`` cannot
import ``worker``, so they are listed here and ``tests/common/test_engine_flags.py`` checks the
list against the simulator's parser (names, kinds and choices), so the two cannot drift.
"""

from __future__ import annotations

from common.engine_flags.spec import FlagSpec, FlagType

SIM_PREFIX = "sim-"


def _value(name: str, value_type: FlagType, default: object, help_text: str,
           choices: tuple[object, ...] | None = None) -> FlagSpec:
    return FlagSpec(name=name, options=("--" + name,), kind="store", value_type=value_type,
                    default=default, help=help_text, choices=choices, group="simulator")


def _switch(name: str, help_text: str) -> FlagSpec:
    return FlagSpec(name=name, options=("--" + name,), kind="store_true", default=False,
                    help=help_text, group="simulator")


SIM_FLAGS: dict[str, FlagSpec] = {spec.name: spec for spec in (
    _value("sim-gpu", "str", None, "GPU model the simulator pretends to run on."),
    _value("sim-seed", "int", 0, "Seed of the simulator's randomness."),
    _value("sim-noise", "float", 0.0, "Relative timing noise (>= 0)."),
    _value("sim-startup-scale", "float", 0.05, "Scale of the simulated startup time (>= 0)."),
    _value("sim-tokenizer", "str", None, "Tokenizer the simulator counts tokens with."),
    _value("sim-crash-after-requests", "int", None, "Crash after this many requests."),
    _switch("sim-hang-at-startup", "Never become ready."),
    _value("sim-slow-startup-s", "float", 0.0, "Extra startup time in seconds."),
    _switch("sim-hang-completions", "Accept completions and never answer them."),
    _value("sim-oom-above-running", "int", None,
           "Fail with out-of-memory above this many running requests."),
    _value("sim-http-error-rate", "float", 0.0, "Share of requests answered with an error."),
    _value("sim-http-error-status", "int", 500, "HTTP status of injected errors.",
           choices=(429, 500, 503)),
)}


def sim_flag(name: str) -> FlagSpec | None:
    """The ``--sim-*`` flag a spelling names (leading dashes optional), or None."""
    return SIM_FLAGS.get(name.lstrip("-"))
