"""Engines by name: ``get_engine("vllm")``, ``get_engine("sim", dialect="sglang")``.

The registry maps each name to a lazy factory, so looking one engine up imports only its module.
Options are keyword arguments of the factory: ``sim`` takes ``dialect`` (``vllm`` | ``sglang``),
``trtllm`` takes ``served_model_name_flag``. Every engine takes ``python``: the interpreter for
engines started as ``python -m ...`` (SGLang, the simulator; default: this process's), which
engines started by their own executable (vLLM, TensorRT-LLM) do not need.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from common.errors import ConfigError
from worker.engines.base import Engine

__all__ = ["ENGINE_NAMES", "Engine", "get_engine"]


def _vllm(python: str | None = None) -> Engine:
    from worker.engines.vllm import VllmEngine

    return VllmEngine()


def _sglang(python: str | None = None) -> Engine:
    from worker.engines.sglang import SglangEngine

    return SglangEngine() if python is None else SglangEngine(python=python)


def _trtllm(served_model_name_flag: bool = False, python: str | None = None) -> Engine:
    from worker.engines.trtllm import TrtllmEngine

    return TrtllmEngine(served_model_name_flag=served_model_name_flag)


def _sim(dialect: str = "vllm", python: str | None = None) -> Engine:
    from worker.engines.sim import SimulatedEngine

    if python is None:
        return SimulatedEngine(dialect=dialect)
    return SimulatedEngine(dialect=dialect, python=python)


_FACTORIES: dict[str, Callable[..., Engine]] = {
    "vllm": _vllm,
    "sglang": _sglang,
    "trtllm": _trtllm,
    "sim": _sim,
}
ENGINE_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_engine(name: str, **options: object) -> Engine:
    """The engine registered as ``name``, built with ``options``.

    Raises ``ConfigError`` naming the valid engines for an unknown name, and the accepted
    options for an option the engine does not take.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown engine {name!r}; valid engines: {', '.join(ENGINE_NAMES)}",
            path="engine.name", value=name, allowed=ENGINE_NAMES)
    signature = inspect.signature(factory)
    try:
        signature.bind(**options)
    except TypeError:
        accepted = ", ".join(signature.parameters) or "none"
        raise ConfigError(
            f"engine {name!r} does not take option(s) {', '.join(sorted(options))}; "
            f"accepted: {accepted}", path="engine", value=sorted(options)) from None
    return factory(**options)
