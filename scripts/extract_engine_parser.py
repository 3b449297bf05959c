"""Build an engine's own server argument parser and print its actions as JSON (stdout).

    <scratch venv>/bin/python scripts/extract_engine_parser.py vllm|sglang [--help-texts]

Run by ``scripts/refresh_engine_flags.py`` inside a scratch virtualenv that has the engine
installed; it imports only the standard library and the engine, never servetune. The parser is
the one the engine's server command parses with: vLLM's
``make_arg_parser(FlexibleArgumentParser())`` (``vllm serve``), SGLang's
``ServerArgs.add_cli_args(argparse.ArgumentParser())`` (``sglang.launch_server``). Each action
becomes one record: option strings and every other spelling the parser accepts, kind, value
type (read by probing the action's ``type`` callable with sample strings), nargs, choices,
default, help, deprecation and argument group. Extra arguments are ignored (``--help-texts``
exists so that vLLM, which reads its help texts only when an argument contains ``--help``,
fills them in).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable
from typing import Any


def vllm_parser() -> tuple[argparse.ArgumentParser, str]:
    import vllm.platforms as platforms

    if not platforms.current_platform.device_type:
        # No GPU here, and releases before VLLM_TARGET_DEVICE=cpu is honoured at run time
        # (0.11) find no platform: build the parser for vLLM's CPU platform instead.
        from vllm.platforms.cpu import CpuPlatform

        platforms._current_platform = CpuPlatform()
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser
    try:
        from vllm.entrypoints.common.cli_args import make_arg_parser

        where = "vllm.entrypoints.common.cli_args.make_arg_parser"
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser

        where = "vllm.entrypoints.openai.cli_args.make_arg_parser"
    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve")), where


def sglang_parser() -> tuple[argparse.ArgumentParser, str]:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    return parser, "sglang.srt.server_args.ServerArgs.add_cli_args"


PARSERS: dict[str, Callable[[], tuple[argparse.ArgumentParser, str]]] = {
    "vllm": vllm_parser, "sglang": sglang_parser}


def probe(fn: Callable[[str], Any], text: str) -> tuple[bool, Any]:
    """Whether ``fn`` takes ``text``, and what it makes of it."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return True, fn(text)
    except BaseException:  # parsers raise anything from ArgumentTypeError to SystemExit
        return False, None


def value_type(action: argparse.Action) -> tuple[str, list[str]]:
    """(type, words): words are non-numeric strings a numeric parser also takes ("auto")."""
    fn = action.type
    if fn is None or fn is str:
        return "str", []
    if fn is int:
        return "int", []
    if fn is float:
        return "float", []
    if not callable(fn):
        return "str", []
    okw, word = probe(fn, "servetune-probe")
    takes_words = okw and word == "servetune-probe"
    for text in ("{}", '{"a": 1}', "[1]"):
        ok, obj = probe(fn, text)
        if ok and obj is not None and not isinstance(obj, (str, bool, int, float)):
            # A parser that also passes a plain word through takes strings as well.
            return ("str" if takes_words else "json"), []
    if takes_words:
        return "str", []
    okt, true = probe(fn, "true")
    okf, false = probe(fn, "false")
    if okt and okf and true is True and false is False:
        return "bool", []
    ok7, seven = probe(fn, "7")
    ok15, one_five = probe(fn, "1.5")
    words = [w for w in ("auto",) if probe(fn, w)[0] and probe(fn, w)[1] is not None]
    if ok7 and type(seven) is int and not (ok15 and isinstance(one_five, float)):
        return "int", words
    if ok15 and isinstance(one_five, float):
        return "float", words
    return "str", []


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    enum_value = getattr(value, "value", None)
    if enum_value is not None and isinstance(enum_value, (int, str)):
        return enum_value
    return repr(value)


def native(value: Any) -> bool:
    """Whether a default is plain data (JSON as it is), not an object's repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(native(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and native(v) for k, v in value.items())
    return isinstance(getattr(value, "value", None), (int, str))


def kind(action: argparse.Action) -> str | None:
    """The registry's kind of an action (None: not a flag of the server, e.g. --help)."""
    a = argparse
    if isinstance(action, a.BooleanOptionalAction):
        return "boolean_optional"
    if isinstance(action, a._StoreTrueAction):
        return "store_true"
    if isinstance(action, a._StoreFalseAction):
        return "store_false"
    if isinstance(action, a._StoreConstAction):
        return "store_const"
    if isinstance(action, (a._AppendAction, a._ExtendAction)):
        return "append"
    if isinstance(action, a._CountAction):
        return "count"
    if isinstance(action, (a._HelpAction, a._VersionAction, a._AppendConstAction)):
        return None
    if action.nargs == 0:
        return "store_true"
    return "store"


def record(parser: argparse.ArgumentParser, action: argparse.Action, k: str,
           group: str | None, deprecated: set[argparse.Action]) -> dict[str, Any]:
    """One action as plain data."""
    choices: Any = action.choices
    if isinstance(choices, (set, frozenset)):
        choices = sorted(choices, key=repr)
    elif choices is not None:
        choices = list(choices)
    typed = value_type(action) if k in ("store", "append") else None
    # Every spelling the parser accepts for this action, visible or not (vLLM registers
    # `--no-enable-x` beside `--disable-x` but shows only the latter).
    spellings = sorted(o for o, a in parser._option_string_actions.items() if a is action)
    negative = getattr(action, "negative_option_strings", None)
    if negative is None and k == "boolean_optional":
        negative = [o for o in spellings if o.startswith("--no-")
                    and "--" + o[len("--no-"):] in spellings]
    help_text = action.help
    hidden = help_text == argparse.SUPPRESS
    return {
        "option_strings": list(action.option_strings),
        "spellings": spellings,
        "negative": sorted(negative or []),
        "dest": action.dest,
        "kind": k,
        "action": type(action).__name__,
        "type": typed[0] if typed else None,
        "words": typed[1] if typed else [],
        "parser": getattr(action.type, "__qualname__", None) if action.type else None,
        "nargs": action.nargs,
        "choices": jsonable(choices),
        "default": None if action.default is argparse.SUPPRESS else jsonable(action.default),
        "default_is_data": native(action.default),
        "const": jsonable(action.const),
        "required": bool(action.required),
        "help": "" if hidden or help_text is None else str(help_text),
        "hidden": hidden,
        "deprecated": bool(getattr(action, "deprecated", False)) or action in deprecated
        or "deprecat" in type(action).__name__.lower(),
        "group": group,
    }


def main(engine: str) -> None:
    with contextlib.redirect_stdout(sys.stderr):  # engines log to stdout while importing
        parser, where = PARSERS[engine]()
    deprecated = set(getattr(parser, "_deprecated", ()))  # vLLM's on Python < 3.13
    groups = {id(action): group.title for group in parser._action_groups
              for action in group._group_actions}
    out = []
    for action in parser._actions:
        k = kind(action) if action.option_strings else None
        if k is not None:
            out.append(record(parser, action, k, groups.get(id(action)), deprecated))
    package = __import__(engine)
    json.dump({"parser": where, "version": getattr(package, "__version__", None),
               "file": package.__file__, "actions": out}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
