"""The genai-bench adapter: build its command line, run it as a subprocess, parse its results.

genai-bench is never imported here (importing it monkey-patches sockets through gevent); it runs
as a child process with stdin closed (it prompts for missing options otherwise), its live UI off
(the UI exits on any error log line), offline, against one server.

Facts this module relies on (genai-bench 0.0.5, read in its source and verified here):
- ``--api-backend vllm|sglang`` sends ``ignore_eos: true`` (``openai`` strips it); text-to-text
  posts to ``{api_base}/v1/chat/completions`` with ``stream_options.include_usage``.
- Option order matters: ``--api-backend`` before ``--api-key`` and ``--task``, ``--task``
  before ``--traffic-scenario``. ``--api-key`` is required even for a local server.
- ``--max-time-per-run`` is in whole minutes; the request limit is checked once a second, so
  runs overshoot it and last whole seconds.
- One result file per (scenario, concurrency): ``*_num_concurrency_<c>_time_<n>s.json`` holding
  ``aggregated_metrics`` (latencies in seconds). ``error_rate`` in it is always 0 (computed
  before ``num_requests`` is set): the error rate is recomputed from the counts. Its token
  rates divide warm-up-windowed token sums by the whole run's duration: token rates are
  recomputed as requests/s × mean tokens per request.
- A level where every request fails aborts the remaining levels with exit code 1 (the files of
  earlier levels stay): results are parsed whatever the exit code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.benchmark import LevelMetrics, Stats
from worker.lifeline import kill_with_parent

OFFLINE_ENV = {
    "ENABLE_UI": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "NO_PROXY": "127.0.0.1,localhost,::1",
    "no_proxy": "127.0.0.1,localhost,::1",
}
# Time genai-bench needs besides the runs themselves: start-up, a 1 s pause per level, and the
# report it writes at the end (measured on a 2-core machine: ~3 s + ~7 s).
FIXED_OVERHEAD_S = 12.0
PER_LEVEL_OVERHEAD_S = 2.0


class GenaiBenchError(RuntimeError):
    """genai-bench could not run or produced no result at all; ``log_tail`` says why."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class GenaiBenchRun:
    """One genai-bench invocation: every scenario × concurrency level against one server."""

    api_base: str
    served_model_name: str
    tokenizer_dir: Path
    scenarios: tuple[str, ...]
    concurrencies: tuple[int, ...]
    max_requests_per_run: int
    max_time_per_run_s: float
    output_dir: Path
    api_backend: str = "vllm"
    warmup_ratio: float = 0.0
    cooldown_ratio: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.output_dir / "genai-bench"

    def command(self) -> list[str]:
        argv = [sys.executable, "-c", "from genai_bench.cli.cli import cli; cli()", "benchmark",
                "--api-backend", self.api_backend, "--api-base", self.api_base,
                "--api-key", "servetune-local", "--task", "text-to-text",
                "--api-model-name", self.served_model_name,
                "--model-tokenizer", str(self.tokenizer_dir),
                "--model", self.served_model_name]
        for scenario in self.scenarios:
            argv += ["--traffic-scenario", scenario]
        for concurrency in self.concurrencies:
            argv += ["--num-concurrency", str(concurrency)]
        minutes = max(1, math.ceil(self.max_time_per_run_s / 60))
        argv += ["--max-requests-per-run", str(self.max_requests_per_run),
                 "--max-time-per-run", str(minutes),
                 "--experiment-base-dir", str(self.output_dir),
                 "--experiment-folder-name", self.folder.name,
                 "--log-dir", str(self.output_dir / "logs")]
        if self.warmup_ratio:
            argv += ["--warmup-ratio", str(self.warmup_ratio)]
        if self.cooldown_ratio:
            argv += ["--cooldown-ratio", str(self.cooldown_ratio)]
        return argv

    def deadline_s(self) -> float:
        """A generous upper bound on the invocation's wall time."""
        levels = len(self.scenarios) * len(self.concurrencies)
        per_level = max(1, math.ceil(self.max_time_per_run_s / 60)) * 60
        return FIXED_OVERHEAD_S + levels * (per_level + PER_LEVEL_OVERHEAD_S) + 30


@dataclass(frozen=True)
class GenaiBenchOutcome:
    levels: list[LevelMetrics]
    returncode: int
    wall_s: float
    log_tail: str
    stopped_early: bool = False


# How often a watched run's folder is checked for a finished level.
WATCH_INTERVAL_S = 0.25
LevelWatcher = Callable[[LevelMetrics], bool]


def run(spec: GenaiBenchRun, timeout_s: float | None = None,
        on_level: LevelWatcher | None = None) -> GenaiBenchOutcome:
    """Run genai-bench to completion (or kill it at the deadline) and parse what it wrote.

    ``on_level`` sees each level as soon as genai-bench writes its result file (it writes one
    per level as the level ends, in the order of the levels); returning True stops the run
    there: genai-bench is killed and the outcome holds the levels up to that one, so
    stopping early costs no extra genai-bench start-up.
    """
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    # Result files of an earlier run in this folder (a killed attempt's) are not this run's.
    shutil.rmtree(spec.folder, ignore_errors=True)
    log_path = spec.output_dir / "genai-bench.out"
    env = dict(os.environ, **OFFLINE_ENV, **spec.extra_env)
    started = time.monotonic()
    deadline = started + (timeout_s or spec.deadline_s())
    stopped = False
    seen: dict[Path, LevelMetrics] = {}
    with log_path.open("w") as log:
        proc = subprocess.Popen(spec.command(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=spec.output_dir,
                                start_new_session=True, preexec_fn=kill_with_parent())
        try:
            returncode = None
            while returncode is None:
                try:
                    returncode = proc.wait(timeout=WATCH_INTERVAL_S if on_level else max(
                        deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    if on_level is not None and _watch(spec.folder, seen, on_level):
                        stopped = True
                        _kill_group(proc)
                        returncode = proc.returncode
                    elif time.monotonic() >= deadline:
                        _kill_group(proc)
                        returncode = -signal.SIGKILL
        except BaseException:
            _kill_group(proc)
            raise
    wall = time.monotonic() - started
    tail = _tail(log_path)
    if stopped:
        levels = list(seen.values())
    else:
        levels = parse_results(spec.folder) if spec.folder.exists() else []
        if on_level is not None:  # levels written after the last look
            watched = {(lv.scenario, lv.concurrency) for lv in seen.values()}
            for level in levels:
                if (level.scenario, level.concurrency) not in watched:
                    on_level(level)
    if not levels:
        raise GenaiBenchError(
            f"genai-bench exited with {returncode} after {wall:.1f} s and wrote no result",
            tail)
    return GenaiBenchOutcome(levels, returncode, wall, tail, stopped)


def _watch(folder: Path, seen: dict[Path, LevelMetrics], on_level: LevelWatcher) -> bool:
    """Hand each newly finished level to ``on_level``; True if it asks to stop."""
    if not folder.exists():
        return False
    for path in sorted(_result_files(folder), key=lambda p: p.stat().st_mtime):
        if path in seen:
            continue
        try:
            level = parse_result_file(path)
        except (ValueError, KeyError, OSError):
            continue  # still being written: read it at the next look
        seen[path] = level
        if on_level(level):
            return True
    return False


def _result_files(folder: Path) -> list[Path]:
    return [path for path in folder.glob("*_time_*s.json") if not path.name.startswith("debug")]


def parse_results(folder: Path) -> list[LevelMetrics]:
    """Every per-level result file in ``folder``, ordered by scenario then concurrency."""
    levels = [parse_result_file(path) for path in _result_files(folder)]
    return sorted(levels, key=lambda m: (m.scenario, m.concurrency))


def parse_result_file(path: Path) -> LevelMetrics:
    data = json.loads(path.read_text())
    agg = data["aggregated_metrics"]
    stats = agg.get("stats") or {}
    completed = int(agg.get("num_completed_requests") or 0)
    errors = int(agg.get("num_error_requests") or 0)
    if not errors and agg.get("error_codes_frequency"):
        errors = sum(int(v) for v in agg["error_codes_frequency"].values())
    # Token rates as requests/s × mean tokens: genai-bench's own divide warm-up-windowed sums
    # by the unwindowed duration.
    rps = float(agg.get("requests_per_second") or 0.0)
    mean_in = _mean(stats.get("num_input_tokens"))
    mean_out = _mean(stats.get("num_output_tokens"))
    return LevelMetrics(
        scenario=str(agg["scenario"]),
        concurrency=int(agg.get("num_concurrency") or 0),
        num_completed=completed, num_errors=errors,
        duration_s=float(agg.get("run_duration") or 0.0),
        ttft_ms=_stats_ms(stats.get("ttft")),
        tpot_ms=_stats_ms(stats.get("tpot")),
        e2e_latency_ms=_stats_ms(stats.get("e2e_latency")),
        input_tokens_per_s=rps * mean_in, output_tokens_per_s=rps * mean_out,
        total_tokens_per_s=rps * (mean_in + mean_out), requests_per_s=rps,
        mean_input_tokens=mean_in, mean_output_tokens=mean_out,
    )


def _stats_ms(raw: dict[str, Any] | None) -> Stats:
    if not raw or raw.get("mean") is None:
        return Stats.of([])

    def ms(key: str) -> float:
        value = raw.get(key)
        return math.nan if value is None else float(value) * 1e3

    return Stats(mean=ms("mean"), p50=ms("p50"), p90=ms("p90"), p95=ms("p95"), p99=ms("p99"),
                 min=ms("min"), max=ms("max"))


def _mean(raw: dict[str, Any] | None) -> float:
    if not raw or raw.get("mean") is None:
        return 0.0
    return float(raw["mean"])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
