"""Progress lines while a study runs: one line per finished trial, with the best so far."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback


class ProgressPrinter(Callback):
    """A Tune callback printing running / done / failed counts and the best score so far."""

    def __init__(self, study: str, planned: int, out: TextIO | None = None) -> None:
        self.study = study
        self.planned = planned
        self.out = out  # None: sys.stdout at print time (Tune pickles callbacks)
        self.started = time.monotonic()
        self.running: set[str] = set()
        self.succeeded = 0
        self.failed = 0
        self.best: tuple[float, str] | None = None

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        gpus = trial.placement_group_factory.required_resources.get("GPU", 0)
        self._line(f"{trial} started on {int(gpus)} GPU(s): {_params(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        if result.get("final") is False:  # one benchmark level of a running trial
            verdict = "met the SLOs" if result.get("level_compliant") else (
                "failed the SLOs: higher levels skipped")
            self._line(f"{trial} concurrency {result.get('concurrency')} {verdict}")
            return
        self.running.discard(trial.trial_id)
        status = result.get("status", "?")
        score = result.get("score")
        if status == "succeeded":
            self.succeeded += 1
            if score is not None and (self.best is None or score > self.best[0]):
                self.best = (score, str(trial))
            detail = f"objective {result.get('objective'):.4g}"
        else:
            self.failed += 1
            detail = f"failed ({result.get('reason') or 'unknown'})"
        self._line(f"{trial} {detail} on GPUs [{result.get('gpu_ids', '')}]")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self._line(f"{trial} errored (infrastructure); Tune may retry it")

    def _line(self, event: str) -> None:
        elapsed = time.monotonic() - self.started
        best = f"best {self.best[0]:.4g} ({self.best[1]})" if self.best else "best -"
        print(f"[{elapsed:6.0f}s] {event} | running {len(self.running)}, done "
              f"{self.succeeded}, failed {self.failed} of {self.planned} | {best}",
              file=self.out or sys.stdout, flush=True)


def _params(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={round(v, 6) if isinstance(v, float) else v}"
                     for k, v in config.items())
