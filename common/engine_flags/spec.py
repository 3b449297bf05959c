"""One engine flag as its own argument parser defines it, and how a study value becomes argv.

A ``FlagSpec`` is one entry of a checked-in registry (``common/engine_flags/data``): the
flag's option strings, what the parser does with it (``kind``), the type its value is parsed
as, ``nargs``, ``choices`` and default. It checks a study value against that definition and
spells the value as argv items. Both are pure functions of the registry entry: no engine is
imported, and the same entry rebuilds an ``argparse`` parser that reads the argv back (the
tests do exactly that).

Kinds:
- ``store``: takes a value (``--max-num-seqs 256``), ``nargs`` values for list flags.
- ``append``: takes one value per occurrence (``--flag a --flag b``).
- ``store_true`` / ``store_false`` / ``store_const``: a switch; a study sets it with ``true``
  (the bare flag) and leaves it out with ``false``.
- ``boolean_optional``: ``--x`` for true and ``--x``'s negative (``--no-x``) for false.
- ``count``: ``-v -v``; a study gives the count.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import ConfigError

FlagKind = Literal["store", "append", "store_true", "store_false", "store_const",
                   "boolean_optional", "count"]
FlagType = Literal["int", "float", "str", "bool", "json"]
SWITCH_KINDS = frozenset({"store_true", "store_false", "store_const"})
BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class FlagValueError(ConfigError):
    """A value does not fit its flag's type, choices or arity; ``path`` is the flag's name."""


@dataclass(frozen=True)
class FlagSpec:
    """One flag of one engine version, as its argument parser defines it.

    ``name`` is the canonical spelling without dashes (the first long option string);
    ``options`` every option string the parser accepts for it (``--tensor-parallel-size``,
    ``-tp``); ``negative`` the ``--no-x`` spellings of a ``boolean_optional`` flag.
    ``hidden_options`` are further spellings the parser accepts but does not show.
    ``value_type`` is None for switches and counts; ``words`` are non-numeric values a numeric
    flag also takes (vLLM's ``--max-model-len auto``). ``default`` is the parser's default
    (None where it is an object, such as a config dataclass).
    """

    name: str
    options: tuple[str, ...]
    kind: FlagKind
    value_type: FlagType | None = None
    nargs: int | str | None = None
    choices: tuple[Any, ...] | None = None
    default: Any = None
    help: str = ""
    deprecated: bool = False
    group: str | None = None
    negative: tuple[str, ...] = ()
    dest: str | None = None
    const: Any = None
    hidden: bool = False
    hidden_options: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> FlagSpec:
        choices = data.get("choices")
        if choices is not None:
            # vLLM adds None to the choices of optional flags (the string "None" unsets them);
            # a study leaves such a flag out instead.
            choices = [c for c in choices if c is not None]
        return cls(name=name, options=tuple(data["options"]), kind=data["kind"],
                   value_type=data.get("type"), nargs=data.get("nargs"),
                   choices=tuple(choices) if choices is not None else None,
                   default=data.get("default"), help=data.get("help", ""),
                   deprecated=bool(data.get("deprecated", False)), group=data.get("group"),
                   negative=tuple(data.get("negative", ())), dest=data.get("dest"),
                   const=data.get("const"), hidden=bool(data.get("hidden", False)),
                   hidden_options=tuple(data.get("hidden_options", ())),
                   words=tuple(data.get("words", ())))

    @property
    def flag(self) -> str:
        """The canonical option string, ``--`` + name."""
        return "--" + self.name

    @property
    def is_switch(self) -> bool:
        return self.kind in SWITCH_KINDS

    @property
    def is_boolean(self) -> bool:
        """Set with true/false in a study (a switch, a ``--x/--no-x`` pair or a bool type)."""
        return self.is_switch or self.kind == "boolean_optional" or self.value_type == "bool"

    @property
    def takes_list(self) -> bool:
        return self.kind == "append" or self.nargs in ("+", "*") or (
            isinstance(self.nargs, int) and self.nargs > 1)

    @property
    def is_numeric(self) -> bool:
        return self.value_type in ("int", "float") and self.choices is None \
            and self.kind in ("store", "count")

    def allowed(self) -> str:
        """What a study may give this flag, in words (for error messages and docs)."""
        if self.kind == "boolean_optional":
            return f"true ({self.flag}) or false ({self.negative[0] if self.negative else '?'})"
        if self.is_switch:
            if self.default is True and self.kind == "store_true":
                return f"true only ({self.flag} is on by default and has no off switch)"
            return f"true ({self.flag}) or false (left out)"
        if self.kind == "count":
            return "an integer count >= 0"
        if self.choices is not None:
            return "one of " + ", ".join(_show(c) for c in self.choices)
        noun = {"int": "an integer", "float": "a number", "bool": "true or false",
                "json": "a JSON string", "str": "a string"}.get(self.value_type or "str", "")
        if self.words:
            noun += " or " + ", ".join(repr(w) for w in self.words)
        if self.takes_list:
            return f"{noun} or a list of them (fixed_flags)"
        return noun

    def validate(self, value: Any) -> Any:
        """The value normalised to the flag's type, or ``FlagValueError`` naming the flag, the
        value and what is allowed. Lists are accepted for list flags only."""
        if value is None:
            raise self._error(value, "null is not a value; leave the flag out instead")
        if self.is_boolean and self.value_type != "bool":
            return self._validate_switch(value)
        if self.kind == "count":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self._error(value)
            return value
        if isinstance(value, (list, tuple)):
            if not self.takes_list:
                raise self._error(value, "takes one value, not a list")
            if isinstance(self.nargs, int) and len(value) != self.nargs:
                raise self._error(value, f"takes exactly {self.nargs} values")
            if self.nargs == "+" and not value:
                raise self._error(value, "needs at least one value")
            return [self._scalar(v) for v in value]
        if isinstance(self.nargs, int) and self.nargs > 1:
            raise self._error(value, f"takes exactly {self.nargs} values (a list)")
        return self._scalar(value)

    def argv(self, value: Any) -> list[str]:
        """Argv items for an already validated value (``[]`` where the flag is left out).

        One argv item per value, never a shell string. A single value that starts with ``-``
        is written ``--flag=value`` so that it cannot read as another flag."""
        if self.is_boolean and self.value_type != "bool":
            on = bool(value)
            if self.kind == "boolean_optional":
                return [self.flag] if on else [self.negative[0]]
            if not on and self.kind == "store_true" and self.default is True:
                raise self._error(value, "is on by default and has no off switch")
            return [self.flag] if on else []
        if self.kind == "count":
            return [self.flag] * int(value)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        words = [format_value(v) for v in items]
        if self.kind == "append":
            return [part for word in words for part in self._pair(word)]
        if len(words) == 1 and not self.takes_list:
            return self._pair(words[0])
        for word in words:
            if looks_like_flag(word):
                raise self._error(word, "a list item must not start with '-' (it would read "
                                  "as a flag)")
        return [self.flag, *words]

    def _pair(self, word: str) -> list[str]:
        if word.startswith("-"):
            return [f"{self.flag}={word}"]
        return [self.flag, word]

    def _validate_switch(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self._error(value)
        if self.kind == "store_true" and self.default is True and value is False:
            raise self._error(value, "is on by default and has no off switch")
        return value

    def _scalar(self, value: Any) -> Any:
        kind = self.value_type or "str"
        if isinstance(value, str) and value in self.words:
            return value
        normal = _coerce(kind, value)
        if normal is _BAD:
            raise self._error(value)
        if self.choices is not None and normal not in self.choices:
            raise self._error(value, closest=_closest_choice(normal, self.choices))
        if kind in ("str", "json") and isinstance(normal, str) and looks_like_flag(normal):
            raise self._error(value, "must not start with '-' (it would read as a flag)")
        return normal

    def _error(self, value: Any, reason: str | None = None,
               closest: str | None = None) -> FlagValueError:
        why = f"{reason}; allowed: {self.allowed()}" if reason else f"allowed: {self.allowed()}"
        hint = f"; did you mean {closest!r}?" if closest else ""
        return FlagValueError(f"{self.flag}: {_show(value)} is not valid ({why}){hint}",
                              path=self.name, value=value,
                              allowed=[str(c) for c in self.choices] if self.choices else None)


class _Bad:
    pass


_BAD = _Bad()


def _coerce(kind: str, value: Any) -> Any:
    """A study value (YAML scalar) as the flag's type, or ``_BAD``."""
    if kind == "int":
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                return _BAD
        return _BAD
    if kind == "float":
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return _BAD
        else:
            return _BAD
        return number if math.isfinite(number) else _BAD
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]
        return _BAD
    if kind == "json":
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True)
        if not isinstance(value, str):
            return _BAD
        try:
            json.loads(value)
        except ValueError:
            return _BAD
        return value
    if isinstance(value, bool):
        # A YAML `true` for a string flag is almost always a slip (the engine would get "True").
        return _BAD
    if isinstance(value, (int, float, str)):
        return value if isinstance(value, str) else format_value(value)
    return _BAD


def looks_like_flag(word: str) -> bool:
    """Whether argparse could read ``word`` as an option rather than a value: it starts with
    ``-`` and is not a negative number (argparse's own rule, for parsers that, like vLLM's and
    SGLang's, define no option that looks like a negative number)."""
    return word.startswith("-") and _NEGATIVE_NUMBER.match(word) is None


_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def format_value(value: Any) -> str:
    """One value as the engines read it: integer-valued floats from numeric search ranges as
    ``8192`` (not ``8192.0``), floats rounded to 6 places, booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def _closest_choice(value: Any, choices: Sequence[Any]) -> str | None:
    names = [str(c) for c in choices]
    match = difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)
    return match[0] if match else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
