"""The checked-in flag registries: one JSON file per engine and version, loaded on demand.

``common/engine_flags/data/<engine>-<version>.json`` is written by
``scripts/refresh_engine_flags.py`` from the engine's released wheel (its own argument parser,
walked action by action) and never edited by hand. ``registry(engine, version)`` loads one
(``version=None``: the newest checked in) and caches it; a version that is not checked in is a
``ConfigError`` that lists the versions that are.

Spellings: a flag is found by its canonical name, any of its option strings (``-tp``), with or
without leading dashes, and by its ``--no-`` spelling (``boolean_optional`` flags). vLLM's
parser also reads ``--max_num_seqs`` as ``--max-num-seqs`` (it turns underscores in flag names
into dashes); the registry records that as ``underscore_spelling`` and lookups honour it. SGLang's
parser does not, so ``max_running_requests`` is unknown there (with a did-you-mean).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from common.engine_flags.spec import FlagSpec
from common.errors import ConfigError

REGISTRY_ENGINES = ("vllm", "sglang")
_FILE = re.compile(r"^(?P<engine>[a-z0-9_]+)-(?P<version>\d[^/]*)\.json$")


class UnknownFlagError(ConfigError):
    """A flag name the engine's parser does not define; ``allowed`` holds the closest names."""


@dataclass(frozen=True)
class Resolved:
    """A flag found by one of its spellings; ``negated`` when it was the ``--no-x`` one."""

    spec: FlagSpec
    negated: bool = False


@dataclass(frozen=True)
class FlagRegistry:
    """Every server flag of one engine version (immutable; safe to share between threads)."""

    engine: str
    version: str
    flags: Mapping[str, FlagSpec]
    underscore_spelling: bool = False
    source: Mapping[str, Any] = field(default_factory=dict)
    _index: dict[str, Resolved] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = self._index
        for spec in self.flags.values():
            for option in (*spec.options, *spec.hidden_options):
                index.setdefault(option.lstrip("-"), Resolved(spec))
            for option in spec.negative:
                index.setdefault(option.lstrip("-"), Resolved(spec, negated=True))
        for spec in self.flags.values():  # canonical names win over short aliases
            index[spec.name] = Resolved(spec)

    def __iter__(self) -> Iterator[FlagSpec]:
        return iter(self.flags.values())

    def __len__(self) -> int:
        return len(self.flags)

    def resolve(self, name: str) -> Resolved | None:
        """The flag a spelling names, or None."""
        key = name.lstrip("-")
        found = self._index.get(key)
        short = name.startswith("-") and not name.startswith("--")
        if found is None and self.underscore_spelling and not short:
            # What the engine's parser does with `--max_num_seqs` before it parses.
            found = self._index.get(key.replace("_", "-"))
        return found

    def lookup(self, name: str) -> FlagSpec | None:
        found = self.resolve(name)
        return found.spec if found else None

    def flag(self, name: str) -> FlagSpec:
        """The flag a spelling names, or ``UnknownFlagError`` with the closest valid name."""
        found = self.lookup(name)
        if found is None:
            raise self.unknown(name)
        return found

    def suggest(self, name: str) -> str | None:
        """The closest valid spelling of an unknown flag name, or None."""
        key = name.lstrip("-")
        dashed = key.replace("_", "-")
        if dashed in self._index:
            return self._index[dashed].spec.name
        names = sorted(self._index)
        match = difflib.get_close_matches(dashed, names, n=1, cutoff=0.6)
        return match[0] if match else None

    def unknown(self, name: str) -> UnknownFlagError:
        hint = self.suggest(name)
        did_you_mean = f"; did you mean {hint!r}?" if hint else ""
        return UnknownFlagError(
            f"{name.lstrip('-')!r} is not a flag of {self.engine} {self.version}"
            f"{did_you_mean} (see docs/engine-parameters.md)",
            path=name.lstrip("-"), value=name, allowed=[hint] if hint else None)


def available_versions(engine: str) -> list[str]:
    """Versions with a checked-in registry for this engine, oldest first."""
    versions = [m["version"] for m in _files() if m["engine"] == engine]
    return sorted(versions, key=version_key)


def registry(engine: str, version: str | None = None) -> FlagRegistry:
    """The flag registry of ``engine`` at ``version`` (None: the newest checked in).

    Raises ``ConfigError`` for an engine without registries or a version not checked in,
    listing what is available and how to add a version."""
    versions = available_versions(engine)
    if not versions:
        known = ", ".join(REGISTRY_ENGINES)
        raise ConfigError(f"engine {engine!r} has no flag registry (registries: {known})",
                          path="engine.name", value=engine, allowed=list(REGISTRY_ENGINES))
    wanted = versions[-1] if version is None else version.strip().removeprefix("v")
    if wanted not in versions:
        raise ConfigError(
            f"{engine} {version!r} has no checked-in flag registry; available: "
            f"{', '.join(versions)}. Pick one of them, or add it with `python "
            f"scripts/refresh_engine_flags.py {engine} {wanted}`",
            path="engine.version", value=version, allowed=versions)
    return _load(engine, wanted)


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key for release versions such as ``0.5.15.post1`` and ``0.11.0rc2``."""
    parts: list[Any] = []
    for piece in re.split(r"[.+-]", version):
        match = re.match(r"^(\d+)(.*)$", piece)
        if match:
            parts.append((int(match[1]), match[2]))
        else:
            parts.append((-1, piece))
    return tuple(parts)


@functools.cache
def _load(engine: str, version: str) -> FlagRegistry:
    data = json.loads(_data_dir().joinpath(f"{engine}-{version}.json").read_text())
    flags = {name: FlagSpec.from_json(name, entry) for name, entry in data["flags"].items()}
    return FlagRegistry(engine=data["engine"], version=data["version"], flags=flags,
                        underscore_spelling=bool(data.get("underscore_spelling", False)),
                        source=data.get("source", {}))


@functools.lru_cache(maxsize=1)
def _files() -> tuple[re.Match[str], ...]:
    matches = (_FILE.match(entry.name) for entry in _data_dir().iterdir())
    return tuple(m for m in matches if m is not None)


def _data_dir() -> Any:
    return resources.files("common.engine_flags").joinpath("data")
