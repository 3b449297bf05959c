"""Checks a study must pass before Ray or any engine starts (besides the schema and layouts)."""

from __future__ import annotations

from common.config import StudyConfig
from common.errors import ConfigError


def preflight(study: StudyConfig) -> None:
    """Raise ConfigError for what would make every trial fail the same way."""
    if study.engine.simulated:
        from worker.sim.catalog import UnknownGPUError, UnknownModelError, find_gpu, find_model

        try:
            find_model(study.model.name)
        except UnknownModelError as e:
            raise ConfigError(f"model.name: {e}", path="model.name",
                              value=study.model.name) from None
        try:
            find_gpu(study.cluster.gpu_type)
        except UnknownGPUError as e:
            raise ConfigError(f"cluster.gpu_type: {e}", path="cluster.gpu_type",
                              value=study.cluster.gpu_type) from None
