"""Extract an engine release's server flags from its own argument parser into the registry.

    python scripts/refresh_engine_flags.py vllm 0.33.0
    python scripts/refresh_engine_flags.py sglang 0.5.23 --python python3.11

writes ``common/engine_flags/data/<engine>-<version>.json``: every option of the parser the
engine's server command uses (names and aliases, kind of action, value type, nargs, choices,
default, the help's first sentence, deprecation, argument group), with the engine version, the
wheel's file name and sha256 and the extraction date. Rerun it for a new release; the output is
sorted and stable, so the diff of a refresh is the engine's change log for its flags.

How (the choice, and why): the flags come from the engine's *own* parser, built by the engine's
own code and walked action by action (``parser._actions``), not from reading its source.
Both engines now generate most of their flags from config dataclasses (vLLM: ``EngineArgs``
over ``ModelConfig``, ``CacheConfig``, ...; SGLang 0.5.2x: ``add_cli_args_from_dataclass`` over
``ServerArgs``' annotated fields), so choices, defaults and negative forms only exist after that
code has run; an ``ast`` reading would have to re-implement it. Building the parser needs the
package importable, and its modules import torch and transformers at import time, so the script:

1. ``pip download --no-deps`` the release's wheel into a scratch directory outside the
   repository (default ``/tmp/servetune-engine-flags/<engine>-<version>``) and hashes it;
2. creates a scratch virtualenv there and ``pip install``s the wheel with its dependencies
   (several GB: torch and CUDA libraries come from PyPI; no GPU is needed, nothing is run on
   one, and no model or tokenizer is downloaded);
3. runs ``scripts/extract_engine_parser.py`` in that virtualenv: it builds the parser that
   ``vllm serve``
   (``make_arg_parser(FlexibleArgumentParser())``) or ``python -m sglang.launch_server``
   (``ServerArgs.add_cli_args(argparse.ArgumentParser())``) parses with, and prints its
   actions as JSON;
4. normalises that into the registry file. ``--keep`` keeps the scratch directory (to rerun
   quickly with ``--workdir``); otherwise it is removed.

Where a release's dependencies cannot all be installed from PyPI (SGLang 0.5.19 pins
``cuda-tile``, a stub that fetches from pypi.nvidia.com), ``--deps-python`` names the
interpreter of another scratch virtualenv that has the engine's dependencies (e.g. the newer
release's): the wheel is then installed without dependencies into ``<workdir>/pkg`` and put
first on that interpreter's ``PYTHONPATH``. The registry records which environment it used.

Value types are read from each action's ``type`` callable by probing it with sample strings
(``"7"``, ``"1.5"``, ``"true"``, ``'{"a": 1}'``), because engines wrap ``int`` in helpers
(``optional_type(int)``, ``human_readable_int``); the callable's name is kept as ``parser``.
TensorRT-LLM (``trtllm-serve``, a click command, plus ``LlmArgs`` for
``--extra_llm_api_options``) is not extracted yet: on PyPI it is only a stub that fetches the
wheel from pypi.nvidia.com; see docs/engine-parameters.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "common" / "engine_flags" / "data"
PACKAGES = {"vllm": "vllm", "sglang": "sglang"}
# Parsers whose underscores-in-names handling the registry records (vLLM's FlexibleArgumentParser
# rewrites `--max_num_seqs` to `--max-num-seqs` before parsing; SGLang's plain argparse does not).
UNDERSCORE_SPELLING = {"vllm": True, "sglang": False}
HELP_CHARS = 300
# Environment of the extraction. vLLM's parser builds config defaults that ask for the platform
# (DeviceConfig); on a machine without a GPU it finds none unless told to use its CPU platform.
# That selects no flag: the parser is the same, only the platform it would run on differs.
EXTRACT_ENV: dict[str, dict[str, str]] = {"vllm": {"VLLM_TARGET_DEVICE": "cpu"}, "sglang": {}}

# Runs inside the scratch virtualenv (python EXTRACTOR <engine>): builds the engine's own
# server parser and prints its actions as JSON on stdout.
EXTRACTOR = Path(__file__).with_name("extract_engine_parser.py")


def main(argv: list[str] | None = None) -> int:
    args = _cli().parse_args(argv)
    engine, version = args.engine, args.version.removeprefix("v")
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "servetune-engine-flags"
                   / f"{engine}-{version}").resolve()
    if REPO in workdir.parents or workdir == REPO:
        print(f"--workdir {workdir} is inside the repository; use a scratch path", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        wheel = _download(engine, version, workdir, args.python)
        if args.deps_python:
            python, path = Path(args.deps_python), _target(workdir, args.deps_python, wheel)
        else:
            python, path = _venv(workdir, args.python, wheel), None
        raw = _extract(python, engine, path)
        _check_version(raw, engine, version)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    doc = registry_document(engine, version, wheel, raw)
    if args.deps_python:
        doc["source"]["dependencies"] = ("installed without dependencies over the environment "
                                         f"of {_environment_name(Path(args.deps_python))}")
    out = Path(args.output or DATA / f"{engine}-{version}.json")
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{out}: {len(doc['flags'])} flags of {engine} {version}")
    return 0


def registry_document(engine: str, version: str, wheel: Path,
                      raw: dict[str, Any]) -> dict[str, Any]:
    """The registry file's content from the extractor's raw actions (pure; no I/O but hashing)."""
    flags: dict[str, dict[str, Any]] = {}
    for action in raw["actions"]:
        name, entry = _flag_entry(action)
        if name in flags:
            raise SystemExit(f"{engine} {version}: two actions named {name!r}")
        flags[name] = entry
    return {
        "engine": engine,
        "version": version,
        "underscore_spelling": UNDERSCORE_SPELLING[engine],
        "extracted_on": dt.date.today().isoformat(),
        "source": {"wheel": wheel.name, "sha256": _sha256(wheel), "parser": raw["parser"],
                   "environment": EXTRACT_ENV[engine],
                   "method": "the engine's own argparse parser, walked in a scratch "
                             "virtualenv by scripts/refresh_engine_flags.py"},
        "flags": dict(sorted(flags.items())),
    }


def _flag_entry(action: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    negative = [o for o in action["negative"]]
    options = [o for o in action["option_strings"] if o not in negative]
    long = [o for o in options if o.startswith("--")]
    name = (long or options)[0].lstrip("-")
    # False is spelled `--no-<name>` where the parser takes it (every BooleanOptionalAction
    # does, in every release), else the parser's other negative (`--disable-x`).
    negative.sort(key=lambda o: (o != f"--no-{name}", o not in action["option_strings"], o))
    hidden = [o for o in action["spellings"] if o not in options and o not in negative]
    entry: dict[str, Any] = {
        "options": options,
        "kind": action["kind"],
        "dest": action["dest"],
        "help": first_sentence(action["help"]),
        "deprecated": bool(action["deprecated"]) or _says_deprecated(action["help"]),
        "group": action["group"],
    }
    default = action["default"]
    if not action["default_is_data"]:
        # An object default (a config dataclass): its repr, shortened, for reading only.
        entry["default_repr"] = _shorten(str(default), HELP_CHARS)
        default = None
    optional = {"type": action["type"], "nargs": action["nargs"], "choices": action["choices"],
                "default": default, "parser": action["parser"], "negative": negative or None,
                "hidden_options": hidden or None, "words": action.get("words") or None}
    entry.update({k: v for k, v in optional.items() if v is not None})
    if action["kind"] == "store_const":
        entry["const"] = action["const"]
    if action["required"]:
        entry["required"] = True
    if action["hidden"]:
        entry["hidden"] = True
    if action["action"] not in _PLAIN_ACTIONS:
        entry["action"] = action["action"]
    return name, entry


_PLAIN_ACTIONS = {"_StoreAction", "_StoreTrueAction", "_StoreFalseAction", "_StoreConstAction",
                  "_AppendAction", "_ExtendAction", "_CountAction", "BooleanOptionalAction"}


def first_sentence(text: str) -> str:
    """The help's first sentence, whitespace collapsed, at most HELP_CHARS characters."""
    flat = " ".join(text.replace("%%", "%").split())
    for match in _SENTENCE_END.finditer(flat):
        if not flat[:match.start() + 1].endswith(_NOT_AN_END):
            flat = flat[:match.start() + 1]
            break
    return _shorten(flat, HELP_CHARS)


_SENTENCE_END = re.compile(r"[.!?](?=\s+\S)")
_NOT_AN_END = ("e.g.", "i.e.", "etc.", "vs.", "approx.", "Note:")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _says_deprecated(text: str) -> bool:
    return bool(re.search(r"^\W*deprecated\b|\bis deprecated\b|\bdeprecated[:;,]"
                          r"|\bwill be removed\b", text, flags=re.IGNORECASE))


def _download(engine: str, version: str, workdir: Path, python: str) -> Path:
    wheels = workdir / "wheels"
    wheels.mkdir(exist_ok=True)
    found = sorted(wheels.glob(f"{PACKAGES[engine]}-{version}-*.whl"))
    if not found:
        _run([python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "-d", str(wheels), f"{PACKAGES[engine]}=={version}"])
        found = sorted(wheels.glob(f"{PACKAGES[engine]}-{version}-*.whl"))
    if len(found) != 1:
        raise SystemExit(f"expected one {engine} {version} wheel in {wheels}, found {found}")
    return found[0]


def _venv(workdir: Path, python: str, wheel: Path) -> Path:
    venv = workdir / "venv"
    bin_python = venv / "bin" / "python"
    if not bin_python.exists():
        _run([python, "-m", "venv", str(venv)])
    _run([str(bin_python), "-m", "pip", "install", "--quiet", str(wheel)])
    return bin_python


def _target(workdir: Path, python: str, wheel: Path) -> Path:
    """The wheel alone (no dependencies) in ``<workdir>/pkg``, for ``--deps-python``."""
    target = workdir / "pkg"
    if not target.exists():
        _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
              str(wheel)])
    return target


def _environment_name(python: Path) -> str:
    """``sglang 0.5.23`` for the interpreter of a scratch virtualenv this script made."""
    return python.parents[2].name.replace("-", " ", 1)


def _extract(python: Path, engine: str, path: Path | None = None) -> dict[str, Any]:
    # CUDA_VISIBLE_DEVICES="": the parser is built on CPU; nothing may touch a GPU.
    env = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(python.parents[2]), **EXTRACT_ENV[engine]}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    # "--help-texts" in argv: vLLM reads its config docstrings into help texts only when some
    # argument contains "--help" (arg_utils.NEEDS_HELP); the extractor itself ignores it.
    result = subprocess.run([str(python), str(EXTRACTOR), engine, "--help-texts"],
                            capture_output=True,
                            text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"building {engine}'s parser failed:\n{result.stderr[-4000:]}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _check_version(raw: dict[str, Any], engine: str, version: str) -> None:
    """The parser came from the release asked for (not another one on the path)."""
    found = raw.get("version")
    if found is not None and str(found).removeprefix("v") != version:
        raise SystemExit(f"built the parser of {engine} {found} ({raw.get('file')}), "
                         f"not {version}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=sorted(PACKAGES))
    parser.add_argument("version", help="release on PyPI, e.g. 0.33.0")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for the scratch virtualenv (the wheel must fit it; "
                             "SGLang publishes cp311 wheels)")
    parser.add_argument("--workdir", help="scratch directory outside the repository")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--deps-python",
                        help="interpreter of a virtualenv that has the engine's dependencies; "
                             "the wheel is installed over it without its own (see above)")
    parser.add_argument("--output", help="registry file to write (default: the data dir)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
