"""The baseline trial: the engine's defaults, the reference a study's gain is measured against.

It runs the fixed flags, the study's ``search.baseline_flags`` and the smallest parallel layout
of the search space (fewest GPUs; a layout the user names in ``baseline_flags`` wins), and
leaves every other searched flag to the engine's default. It is trial 0 of the study and is
not offered to the searcher (its config is outside the search space).
"""

from __future__ import annotations

import logging
from typing import Any

from common.config import StudyConfig
from common.params import parallel_key, world_size
from manager.space import SearchPlan

logger = logging.getLogger(__name__)


def baseline_flags(study: StudyConfig, plan: SearchPlan) -> dict[str, Any] | None:
    """The baseline's flags, or None when the study runs no baseline (or it cannot fit)."""
    if not study.search.baseline:
        return None
    engine = study.engine.name
    flags: dict[str, Any] = dict(study.fixed_flags)
    chosen = dict(study.search.baseline_flags)
    if not any(parallel_key(engine, f) is not None for f in chosen) and plan.layouts:
        smallest = min(plan.layouts.values(),
                       key=lambda combo: world_size(engine, {**flags, **combo}))
        flags.update(smallest)
    flags.update(chosen)
    gpus = world_size(engine, flags)
    if gpus > plan.max_node_gpus:
        logger.warning("baseline skipped: its layout needs %d GPUs, the largest node has %d",
                       gpus, plan.max_node_gpus)
        return None
    return flags
