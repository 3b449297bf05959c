"""An ``argparse`` parser rebuilt from a registry: the engine's parser definitions, as data.

``build_parser(registry)`` adds every registry flag with the option strings, action, type,
nargs and choices the engine's own parser gave it, so argv that servetune emits can be read
back without importing the engine (``servetune`` checks its argv this way in tests; the
registry came from walking the engine's parser in the first place). Differences from the
engine's parser, on purpose: it raises ``FlagArgvError`` instead of exiting, it has no
positional model argument and no ``--help``, nothing is required (servetune supplies the
model), unknown options are errors, and abbreviations are off (the engines' parsers allow
them; servetune always spells flags in full).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from common.engine_flags.registry import FlagRegistry
from common.engine_flags.spec import BOOL_WORDS, FlagSpec
from common.errors import ConfigError


class FlagArgvError(ConfigError):
    """Argv that the engine's parser definitions would reject."""


class RegistryParser(argparse.ArgumentParser):
    """argparse that raises ``FlagArgvError`` where argparse would print and exit."""

    def error(self, message: str) -> NoReturn:
        raise FlagArgvError(f"{self.prog}: {message}")


def build_parser(reg: FlagRegistry, extra: Iterable[FlagSpec] = ()) -> RegistryParser:
    """A parser for every flag of ``reg`` (plus ``extra``, e.g. the simulator's flags)."""
    parser = RegistryParser(prog=f"{reg.engine} {reg.version}", add_help=False,
                            allow_abbrev=False)
    for spec in [*reg, *extra]:
        _add(parser, spec)
    return parser


def parse_argv(reg: FlagRegistry, argv: list[str],
               extra: Iterable[FlagSpec] = ()) -> argparse.Namespace:
    """``argv`` read by the rebuilt parser (``FlagArgvError`` where it would be rejected)."""
    return build_parser(reg, extra).parse_args(argv)


def dest(spec: FlagSpec) -> str:
    """The namespace attribute a flag's value lands in."""
    return spec.dest or spec.name.replace("-", "_")


def _add(parser: RegistryParser, spec: FlagSpec) -> None:
    common: dict[str, Any] = {"dest": dest(spec), "default": spec.default}
    if spec.kind == "boolean_optional":
        parser.add_argument(*spec.options, *spec.hidden_options, *spec.negative,
                            action=_Toggle, negative=spec.negative, **common)
        return
    options = (*spec.options, *spec.hidden_options)
    if spec.kind in ("store_true", "store_false"):
        parser.add_argument(*options, action=spec.kind, **common)
        return
    if spec.kind == "store_const":
        parser.add_argument(*options, action="store_const",
                            const=spec.const, **common)
        return
    if spec.kind == "count":
        parser.add_argument(*options, action="count", **common)
        return
    kwargs: dict[str, Any] = {"type": _typed(spec)}
    if spec.nargs is not None:
        kwargs["nargs"] = spec.nargs
    if spec.choices is not None:
        kwargs["choices"] = list(spec.choices)
    action = "append" if spec.kind == "append" else "store"
    parser.add_argument(*options, action=action, **kwargs, **common)


class _Toggle(argparse.Action):
    """A ``--x`` / ``--no-x`` pair whose negative spellings are given, not derived (vLLM pairs
    ``--enable-x`` with ``--disable-x``)."""

    def __init__(self, option_strings: list[str], dest: str, negative: tuple[str, ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.negative = frozenset(negative)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string not in self.negative)


def _typed(spec: FlagSpec) -> Callable[[str], Any]:
    convert = _TYPES[spec.value_type or "str"]
    if not spec.words:
        return convert

    def parse(text: str) -> Any:
        return text if text in spec.words else convert(text)

    return parse


def _bool(text: str) -> bool:
    if text.lower() not in BOOL_WORDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return BOOL_WORDS[text.lower()]


def _json(text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON") from None
    return text


_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str,
                                           "bool": _bool, "json": _json}
