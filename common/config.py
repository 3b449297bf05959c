"""The study file: one strict pydantic model per section, validated once at load.

A study file (YAML or JSON) names the model, the engine and how it is launched, the search space
over the engine's own flags, the search, the benchmark, the objective, the cluster and the
storage. ``load_study`` returns a frozen ``StudyConfig`` or raises ``ConfigError`` whose message
names each bad field's path, the value given and what is allowed — before Ray or any engine
starts. Deployment settings (database URL, Ray address) may also come from the environment
(``SERVETUNE_DATABASE_URL``, ``RAY_ADDRESS``); secrets never belong in the study file.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from common.engine_flags import check_study_flags
from common.errors import ConfigError
from common.intent import (
    Expansion,
    ParallelSection,
    QuantizationSection,
    checkpoint_conflicts,
    expand,
    merge,
)
from common.params import (
    PARALLEL_FLAGS,
    RESERVED_FLAGS,
    SWITCH_KEYS,
    normalize_flag,
    parallel_key,
)
from common.traffic import TrafficError, TrafficScenario

FlagValue = bool | int | float | str
logger = logging.getLogger(__name__)


class IntentOverrideWarning(UserWarning):
    """A native flag of the study overrides a flag its parallel/quantization section derives."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelSection(_Section):
    name: str = Field(min_length=1)
    """What the engine loads: a Hugging Face id or a local path."""
    served_name: str | None = None
    """Name the engine serves the model under (default: ``name``)."""
    tokenizer: str | None = None
    """Tokenizer for the benchmark (HF id or local path). Default: the model; for the simulated
    engine, the tokenizer shipped with servetune."""

    @property
    def served(self) -> str:
        return self.served_name or self.name


class EngineSection(_Section):
    name: Literal["vllm", "sglang", "trtllm"]
    """The inference engine whose flags are searched."""
    version: str | None = None
    """Engine version whose flag registry the study's flags are checked against (names, types,
    choices; docs/engine-parameters.md lists the checked-in versions); default: the newest
    checked in. TensorRT-LLM has no registry yet: its version is recorded only."""
    simulated: bool = False
    """Run servetune's simulated engine with this engine's flags (vllm and sglang dialects)."""

    @model_validator(mode="after")
    def _sim_dialect(self) -> EngineSection:
        if self.simulated and self.name == "trtllm":
            raise ValueError("the simulated engine speaks the vllm and sglang dialects, not "
                             "trtllm; set engine.name to vllm or sglang, or simulated: false")
        return self


class LauncherSection(_Section):
    kind: Literal["process", "docker"] = "process"
    """How the engine runs: a child process (``process``) or a container (``docker``)."""
    image: str | None = None
    """Container image (docker launcher; required there), e.g. ``lmsysorg/sglang:latest``."""
    pull: Literal["never", "if_missing"] = "if_missing"
    """Docker: pull the image when it is not on the node (``never``: it must be there)."""
    gpu_mode: Literal["device_requests", "nvidia_env"] = "device_requests"
    """Docker: hand the trial's GPUs to the container as a device request (NVIDIA Container
    Toolkit), or as ``NVIDIA_VISIBLE_DEVICES`` for hosts whose default runtime is nvidia."""
    container_port: int = Field(default=8000, ge=1, le=65535)
    """Docker: the port the engine listens on inside the container (published on
    127.0.0.1 at a free host port)."""
    ipc_host: bool = True
    """Docker: share the host's IPC namespace (NCCL and PyTorch need large shared memory)."""
    shm_size: str | None = None
    """Docker: shared-memory size when ipc_host is false, e.g. ``16g``."""
    volumes: list[str] = Field(default_factory=list)
    """Docker: extra mounts, ``host:container[:ro|rw]``."""
    hf_cache: str | None = "~/.cache/huggingface"
    """Docker: the host's Hugging Face cache, mounted at /root/.cache/huggingface (weights are
    downloaded once per node, not per trial). null: no mount."""
    pass_env: list[str] = Field(default_factory=lambda: ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
    """Environment variables copied from the operator's environment into the engine (secrets
    such as HF_TOKEN): never stored in the study, the database or logs."""
    command: list[str] | None = None
    """Replaces the engine's executable (the argv items before the model), e.g.
    ``["/opt/venv/bin/vllm", "serve"]``; the model and flags follow."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment for the engine (no secrets: list those in pass_env)."""

    @model_validator(mode="after")
    def _docker(self) -> LauncherSection:
        if self.kind == "docker" and not self.image:
            raise ValueError("launcher.image is required with kind: docker")
        for volume in self.volumes:
            parts = volume.split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]) or (
                    len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise ValueError(f"volume {volume!r} is not host:container[:ro|rw]")
        return self


class NumericRange(_Section):
    low: float
    """Lowest value (inclusive). Whole-number bounds and step make an integer range."""
    high: float
    """Highest value (inclusive); must be >= low."""
    log: bool = False
    """Sample on a log scale (low must be > 0)."""
    step: float | None = None
    """Quantization step (> 0); required to expand a range in grid search."""

    @model_validator(mode="after")
    def _check(self) -> NumericRange:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        return self

    @property
    def is_int(self) -> bool:
        values = (self.low, self.high, self.step if self.step is not None else 1.0)
        return all(float(v).is_integer() for v in values)

    def grid(self) -> list[float | int]:
        """The values a grid search visits (needs ``step``)."""
        if self.step is None:
            raise ValueError("a numeric range needs a step to be expanded into a grid")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        if self.is_int:
            return [int(v) for v in values]
        return [round(v, 10) for v in values]


SearchParam = Annotated[list[FlagValue], Field(min_length=1)] | NumericRange


class SearchSection(_Section):
    algorithm: Literal["grid", "random", "tpe", "nsga2"] = "tpe"
    """grid: every combination; random: uniform samples; tpe: Optuna's TPE sampler
    (multi-objective TPE when the objective has ``pareto_with``); nsga2: Optuna's NSGA-II."""
    max_trials: int = Field(default=20, ge=1)
    """Upper bound on trials (a grid larger than this is cut, in order)."""
    max_concurrent_trials: int = Field(default=4, ge=1)
    """Trials running at once (also bounded by free GPUs)."""
    seed: int = 0
    """Seed of the searcher."""
    time_budget_s: float | None = Field(default=None, gt=0)
    """Stop starting trials after this many seconds."""
    startup_trials: int = Field(default=5, ge=0)
    """TPE: random trials before the model-based sampling starts."""
    population_size: int | None = Field(default=None, ge=2)
    """NSGA-II: individuals per generation (default: max_trials / 4, at least 4)."""
    baseline: bool = True
    """Run the engine's defaults first (fixed flags, the smallest parallel layout, no searched
    flag) and report the best trial's gain over it."""
    baseline_flags: dict[str, FlagValue] = Field(default_factory=dict)
    """Flags of the baseline besides the fixed flags (e.g. the tp size a large model needs)."""
    early_stop: bool = True
    """Run concurrency levels in increasing order and stop a trial's benchmark at the first
    level that fails a hard SLO (higher levels can only be worse)."""
    warm_start: bool | list[str] = False
    """Seed the searcher with earlier trials from the database: true takes every study with
    the same model, engine, GPU type, workload and objective; a list names the studies."""
    scheduler: Literal["fifo", "asha"] = "fifo"
    """fifo: every trial runs its whole benchmark (unless an SLO stops it early); asha: Ray
    Tune's asynchronous successive halving, fed each benchmark level's score as the trial
    runs: a trial scoring below the best 1/reduction_factor of those that reached the same
    level is stopped there (stored as ``pruned``). Single-objective studies only."""
    grace_levels: int = Field(default=1, ge=1)
    """ASHA: benchmark levels every trial runs before it can be stopped."""
    reduction_factor: float = Field(default=3.0, gt=1)
    """ASHA: keep the best 1/reduction_factor of the trials at each rung."""

    @field_validator("baseline_flags", mode="before")
    @classmethod
    def _strip_dashes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {normalize_flag(str(k)): v for k, v in value.items()}
        return value


class TimeoutsSection(_Section):
    startup_s: float = Field(default=900.0, gt=0)
    """Deadline for the engine to become ready (model load, compile, CUDA graphs)."""
    teardown_s: float = Field(default=30.0, gt=0)
    """Deadline for the engine to stop before it is killed."""
    trial_s: float | None = Field(default=None, gt=0)
    """Deadline for the whole trial, from deployment to teardown; a trial still running then
    is torn down and fails as ``trial_timeout`` (not retried). Each phase gets what is left
    of it. Default: no deadline besides the phases' own."""
    pull_s: float = Field(default=1800.0, gt=0)
    """Docker launcher: deadline for pulling an image the node does not have (``launcher.pull:
    if_missing``); a pull still running then fails the trial as an infrastructure error. Not
    part of ``startup_s``; recorded as the trial's ``pull_s`` phase."""


class BenchmarkSection(_Section):
    scenarios: list[str] = Field(default_factory=lambda: ["D(1024,256)"], min_length=1)
    """genai-bench traffic scenarios: D(in,out), N(mean_in,std_in)/(mean_out,std_out),
    U(max_in,max_out) or U(min_in,max_in)/(min_out,max_out)."""
    concurrency: list[int] = Field(default_factory=lambda: [1, 8, 32], min_length=1)
    """Concurrency levels (each >= 1; sorted, duplicates dropped), each a closed loop of this
    many users."""
    requests_per_level: int = Field(default=64, ge=1)
    """genai-bench --max-requests-per-run (it overshoots by up to one second of requests)."""
    seconds_per_level: float = Field(default=120.0, ge=60.0)
    """genai-bench --max-time-per-run, rounded up to whole minutes (its unit)."""
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Share of each level's first completed requests left out of the statistics."""
    api_backend: Literal["vllm", "sglang", "openai"] | None = None
    """genai-bench backend (default: the engine's; vllm/sglang send ignore_eos)."""
    timeouts: TimeoutsSection = Field(default_factory=TimeoutsSection)
    """Deadlines of a trial's phases."""

    @field_validator("scenarios")
    @classmethod
    def _scenarios(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                TrafficScenario.parse(text)
            except TrafficError as e:
                raise ValueError(str(e)) from None
        return value

    @field_validator("concurrency")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if any(c < 1 for c in value):
            raise ValueError(f"concurrency levels must be >= 1, got {value}")
        return sorted(set(value))


OBJECTIVE_METRICS = ("output_throughput", "total_throughput", "requests_per_s",
                     "e2e_latency", "ttft", "tpot")
LATENCY_METRICS = frozenset({"e2e_latency", "ttft", "tpot"})
ObjectiveMetric = Literal["output_throughput", "total_throughput", "requests_per_s",
                          "e2e_latency", "ttft", "tpot"]
Statistic = Literal["mean", "p50", "p90", "p95", "p99"]


class ObjectiveTerm(_Section):
    metric: ObjectiveMetric
    """Throughputs are maximized, latencies minimized."""
    statistic: Statistic = "mean"
    """Which statistic of a latency metric (ignored for throughput metrics)."""
    per_gpu: bool = False
    """Divide throughput by the trial's GPU count; throughput metrics only."""

    @property
    def maximize(self) -> bool:
        return self.metric not in LATENCY_METRICS

    @property
    def label(self) -> str:
        if self.maximize:
            return self.metric + ("_per_gpu" if self.per_gpu else "")
        return f"{self.metric}_{self.statistic}_ms"

    @model_validator(mode="after")
    def _check(self) -> ObjectiveTerm:
        if self.per_gpu and not self.maximize:
            raise ValueError("per_gpu applies to throughput metrics, not latency")
        return self


class SloSection(_Section):
    metric: Literal["ttft", "tpot", "e2e_latency"]
    """The latency the objective bounds."""
    statistic: Statistic = "p90"
    """Which statistic of it, per concurrency level."""
    max_ms: float = Field(gt=0)
    """The threshold in milliseconds."""
    kind: Literal["hard", "soft"] = "hard"
    """hard: a level above the threshold fails; soft: it is penalized by
    ``weight · exp(violation / steepness)`` with violation = (actual − max_ms) / max_ms."""
    weight: float = Field(default=1.0, ge=0)
    """Soft SLOs: the penalty's weight."""
    steepness: float = Field(default=0.1, gt=0)
    """Soft SLOs: how fast the penalty grows with the violation."""
    fail_ratio: float | None = Field(default=0.5, gt=0)
    """Soft SLOs: a violation beyond this ratio fails the level as a hard SLO would
    (null: never)."""
    concurrency: list[int] | None = None
    """Levels the SLO applies to (default: every level)."""

    @property
    def label(self) -> str:
        return f"{self.metric}_{self.statistic}"


class ObjectiveSection(_Section):
    metric: ObjectiveMetric = "output_throughput"
    """Throughputs are maximized, latencies minimized."""
    per_gpu: bool = False
    """Divide throughput by the trial's GPU count (compare 2-GPU and 8-GPU configs fairly);
    throughput metrics only."""
    statistic: Statistic = "mean"
    """Which statistic of a latency metric (ignored for throughput metrics)."""
    aggregate: Literal["mean", "best_level"] = "mean"
    """Across concurrency levels: the mean over the SLO-compliant levels, or the value at the
    best compliant level (for throughput: the most a config sustains within the SLOs)."""
    slos: list[SloSection] = Field(default_factory=list)
    """Latency targets checked per concurrency level before aggregation; levels that fail are
    left out, and a trial with no compliant level fails as ``slo_violated``."""
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """A level whose share of failed requests exceeds this fails, like a hard SLO."""
    pareto_with: list[ObjectiveTerm] = Field(default_factory=list, max_length=2)
    """One or two more objectives: the study becomes multi-objective (NSGA-II or
    multi-objective TPE) and its result is the Pareto front."""

    @property
    def maximize(self) -> bool:
        return self.metric not in LATENCY_METRICS

    @property
    def terms(self) -> list[ObjectiveTerm]:
        """Every objective, the primary first."""
        primary = ObjectiveTerm(metric=self.metric, statistic=self.statistic,
                                per_gpu=self.per_gpu)
        return [primary, *self.pareto_with]

    @property
    def multi(self) -> bool:
        return bool(self.pareto_with)

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSection:
        if self.per_gpu and not self.maximize:
            raise ValueError("per_gpu applies to throughput metrics, not latency")
        labels = [term.label for term in self.terms]
        if len(set(labels)) != len(labels):
            raise ValueError(f"pareto_with repeats an objective: {labels}")
        return self


class ClusterSection(_Section):
    address: str = "local"
    """``local`` (start a Ray instance here), ``auto`` (join the running cluster; honours
    ``$RAY_ADDRESS``) or an address (``ray://host:10001``, ``host:6379``)."""
    gpus_per_node: int = Field(default=8, ge=1)
    """GPUs of the local node in local mode (logical: Ray hands out disjoint ids); also the
    node size ``servetune validate`` checks layouts against."""
    cpus_per_trial: float = Field(default=1.0, gt=0)
    """CPUs each trial reserves (engine process + benchmark client)."""
    gpu_type: str = "H100"
    """GPU model: what the simulated engine simulates; recorded for real engines."""
    dashboard: bool = True
    """Local mode: start the Ray dashboard (http://127.0.0.1:8265)."""
    trial_retries: int = Field(default=2, ge=0)
    """How often a trial that failed for an infrastructure reason (node lost, actor died,
    busy GPU, image pull past its deadline) is retried, on whichever node has room; every
    attempt keeps its own row. Deterministic failures are never retried."""
    unschedulable_after_s: float = Field(default=600.0, gt=0)
    """A pending trial that no live node can hold (it needs more GPUs than the largest node
    left, e.g. after a node was lost) fails as ``unschedulable`` after this long; set it
    above the time an autoscaler takes to add a node."""


class StorageSection(_Section):
    database_url: str | None = None
    """SQLAlchemy URL (``postgresql://...`` or ``sqlite:///...``). Overridden by
    ``--database-url`` and ``$SERVETUNE_DATABASE_URL``; default: an SQLite file in
    results_dir. Put no password here: use the environment."""
    results_dir: str = "servetune-results"
    """Where logs, benchmark outputs and Tune's state go (relative to the study file)."""
    outage_s: float = Field(default=300.0, ge=0)
    """How long trials and the driver wait out an unreachable database once the study has
    started: results are spooled to a file next to the trial's logs meanwhile and written
    in order when it is back. (At the start an unreachable database fails the study.)"""


class StudyConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Study name: letters, digits, '.', '_', '-' (it names directories and Ray trials)."""
    model: ModelSection
    """The served model."""
    engine: EngineSection
    """The inference engine and whether it is simulated."""
    launcher: LauncherSection = Field(default_factory=LauncherSection)
    """How each trial runs the engine."""
    parallel: ParallelSection | None = None
    """Parallelism by intent (tp, pp, dp, ep, dcp, cp, attn_dp, or a preset), mapped to the
    engine's native flags (docs/engine-parameters.md); lists are searched jointly with the
    native parallel flags. ``parallel: <preset>`` names a preset."""
    quantization: QuantizationSection | None = None
    """Weight, KV-cache, activation and MoE dtypes by intent (or a preset), mapped to the
    engine's native flags; lists are searched. ``quantization: <preset>`` names a preset."""
    search_space: dict[str, SearchParam] = Field(default_factory=dict)
    """Engine flags to search, by the engine's own names (leading dashes optional): a list
    (categorical) or {low, high, log, step} (numeric). Parallel sizes must be integers >= 1
    and are searched jointly; host, port, model and served name are set by servetune. Flags
    the parallel and quantization sections derive are added here (lists) and to fixed_flags
    (values); a flag given here wins over a derived one, with a warning."""
    fixed_flags: dict[str, FlagValue | list[FlagValue]] = Field(default_factory=dict)
    """Engine flags set the same way in every trial; a list value becomes the flag followed
    by each item."""
    search: SearchSection = Field(default_factory=SearchSection)
    """The searcher and its budget."""
    benchmark: BenchmarkSection = Field(default_factory=BenchmarkSection)
    """The genai-bench workload each trial runs."""
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
    """What the search optimizes."""
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    """Where trials run."""
    storage: StorageSection = Field(default_factory=StorageSection)
    """Where results go."""

    @field_validator("search_space", "fixed_flags", mode="before")
    @classmethod
    def _strip_dashes(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {normalize_flag(str(k)): v for k, v in value.items()}
        return value

    @field_validator("parallel", "quantization", mode="before")
    @classmethod
    def _preset_name(cls, value: Any) -> Any:
        return {"preset": value} if isinstance(value, str) else value

    @model_validator(mode="wrap")
    @classmethod
    def _intent(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> StudyConfig:
        """Map the parallel and quantization sections to native flags, then validate the
        study with them as if it had given them itself (same registry checks)."""
        if not isinstance(data, dict) or (data.get("parallel") is None
                                          and data.get("quantization") is None):
            return _searched(handler(data))
        search = data.get("search") if isinstance(data.get("search"), dict) else {}
        first: StudyConfig = handler({**data, "search": {**search, "baseline_flags": {}}})
        expansion = first.expansion()
        space, fixed, overrides = merge(first.engine.name, first.engine.version, expansion,
                                        first.search_space, first.fixed_flags)
        problems = list(expansion.problems)
        for name, value in [*space.items(), *fixed.items()]:
            if normalize_flag(name) in ("quantization", "q") and name not in expansion.origins:
                values = value if isinstance(value, list) else [value]
                where = "search_space" if name in space else "fixed_flags"
                problems += checkpoint_conflicts(expansion.checkpoint, values, f"{where}.{name}")
        if problems:
            raise ValueError("\n".join(problems))
        for line in overrides:
            warnings.warn(f"{line}: the study's own flag wins", IntentOverrideWarning,
                          stacklevel=2)
        second = {**data, "search_space": space, "fixed_flags": fixed}
        if first.quantization is not None:
            second["quantization"] = first.quantization.model_copy(
                update={"checkpoint": expansion.checkpoint})
        return _searched(handler(second))

    def expansion(self) -> Expansion:
        """The native flags this study's parallel and quantization sections stand for."""
        return expand(self.engine.name, self.engine.version, self.cluster.gpus_per_node,
                      self.model.name, self.parallel, self.quantization)

    def intent_overrides(self) -> list[str]:
        """Derived flags the study's own native flags override (what the warnings said), and
        notes on what a preset left out."""
        expansion = self.expansion()
        _, _, overrides = merge(self.engine.name, self.engine.version, expansion,
                                self.search_space, self.fixed_flags)
        return [*overrides, *expansion.notes]

    @property
    def layout_ties(self) -> dict[str, str]:
        """Layout flags that take another parallel dimension's value in every layout (SGLang
        ``ep: true``: ep-size follows tp)."""
        if self.parallel is None:
            return {}
        expansion = self.expansion()
        merge(self.engine.name, self.engine.version, expansion, self.search_space,
              self.fixed_flags)
        return expansion.ties

    @model_validator(mode="after")
    def _flags(self) -> StudyConfig:
        both = set(self.search_space) & set(self.fixed_flags)
        if both:
            raise ValueError(f"search_space: flags both searched and fixed: {sorted(both)}; "
                             "keep each in one")
        for section, flags in (("search_space", self.search_space),
                               ("fixed_flags", self.fixed_flags)):
            for flag in flags:
                if flag in RESERVED_FLAGS:
                    raise ValueError(f"{section}.{flag}: flag {flag!r} is set by servetune "
                                     "(model, host, port and served name come from the model "
                                     "section)")
                if self.engine.name == "trtllm" and flag in (
                        "dp", "dp-size", "data-parallel-size", "dp_size"):
                    raise ValueError(f"{section}.{flag}: TensorRT-LLM has no data parallelism "
                                     "(constraint trtllm-no-dp; scale out with more trials or "
                                     "replicas instead)")
        for flag, spec in self.search_space.items():
            key = parallel_key(self.engine.name, flag)
            if key is None:
                continue
            values = spec if isinstance(spec, list) else None
            if key in SWITCH_KEYS:
                if values is None or not all(isinstance(v, bool) for v in values):
                    raise ValueError(f"search_space.{flag}: a parallel switch takes a list of "
                                     f"true/false, got {_short(spec)}")
                continue
            if isinstance(spec, NumericRange) and not spec.is_int:
                raise ValueError(f"search_space.{flag}: a parallel size must be an integer "
                                 "range or a list of integers")
            if values is not None and not all(isinstance(v, int) and not isinstance(v, bool)
                                              and v >= 1 for v in values):
                raise ValueError(f"search_space.{flag}: parallel sizes must be integers >= 1, "
                                 f"got {values}")
        # Names, types and choices against the engine version's flag registry; security flags
        # only in fixed_flags (docs/engine-parameters.md).
        problems = check_study_flags(self.engine.name, self.engine.version, self.search_space,
                                     self.fixed_flags, simulated=self.engine.simulated,
                                     other={"search.baseline_flags": self.search.baseline_flags})
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def parallel_flags(self) -> tuple[str, ...]:
        names = PARALLEL_FLAGS[self.engine.name]
        return tuple(n for group in names.values() for n in group)

    @model_validator(mode="after")
    def _objective_and_search(self) -> StudyConfig:
        levels = set(self.benchmark.concurrency)
        for i, slo in enumerate(self.objective.slos):
            unknown = sorted(set(slo.concurrency or ()) - levels)
            if unknown:
                raise ValueError(f"objective.slos.{i}.concurrency: levels {unknown} are not "
                                 f"benchmarked (benchmark.concurrency: {sorted(levels)})")
        if self.search.scheduler == "asha":
            if self.objective.multi:
                raise ValueError("search.scheduler: asha compares one score per level; a "
                                 "multi-objective study (objective.pareto_with) cannot use it")
            if len(self.benchmark.scenarios) * len(self.benchmark.concurrency) < 2:
                raise ValueError("search.scheduler: asha stops trials between benchmark "
                                 "levels; give benchmark.concurrency (or scenarios) at least "
                                 "two levels")
        if self.search.warm_start is not False and (
                self.objective.multi or self.search.algorithm != "tpe"):
            raise ValueError("search.warm_start seeds single-objective TPE studies only (grid "
                             "and random search learn nothing from earlier trials, and a "
                             "multi-objective searcher cannot take their scores)")
        unknown_base = set(self.search.baseline_flags) - set(self.search_space) - set(
            self.fixed_flags)
        if unknown_base:
            raise ValueError(f"search.baseline_flags: {sorted(unknown_base)} are neither "
                             "searched nor fixed flags; the baseline sets searched flags only")
        return self


def _searched(study: StudyConfig) -> StudyConfig:
    if not study.search_space:
        raise ValueError("search_space: nothing to search: give search_space entries, or lists "
                         "(or a preset) in the parallel / quantization sections")
    return study


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file; ``ConfigError`` lists every problem found."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read study file {path}: {e.strerror}", path=str(path)) from e
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                          f"{e}", path=str(path)) from e
    return parse_study(data, source=str(path))


def parse_study(data: Any, source: str = "study") -> StudyConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the study must be a mapping of sections, got "
                          f"{type(data).__name__}")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        errors = [err for err in e.errors() if not _other_union_branch(err)] or e.errors()
        problems = [line for err in errors for line in _describe(err, data).split("\n")]
        first = errors[0]
        raise ConfigError(f"{source}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems),
                          path=_path(first["loc"]), value=first.get("input")) from None


def _other_union_branch(err: Any) -> bool:
    """A search-space value is a list or a range, a section field a value or a list: drop the
    branch the input was not meant for."""
    loc = [str(p) for p in err["loc"]]
    value = err.get("input")
    if err["type"] == "list_type" and (any(p.startswith("list[") for p in loc)
                                       or loc[:1] in (["parallel"], ["quantization"])):
        return not isinstance(value, list)
    if "NumericRange" in loc and err["type"] == "model_type":
        return isinstance(value, list)
    if isinstance(value, list) and loc and _branch(loc[-1]):
        return True  # the scalar branch's complaint about a list
    return False


def _branch(part: str) -> bool:
    """A loc part that names a union branch, not a field or an index."""
    return (part.startswith(("list[", "constrained-", "function-"))
            or part in ("NumericRange", "bool", "int", "float", "str"))


def _path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and _branch(p))]
    return ".".join(parts) or "(top level)"


def _describe(err: Any, data: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    path = _path(loc)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        parent_fields = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), parent_fields, n=1)
        allowed = ", ".join(parent_fields)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"{path}: unknown key{did_you_mean} (allowed: {allowed})"
    if kind == "missing":
        return f"{path}: required"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{path}: {value!r} is not allowed; expected {expected}"
    message = err["msg"].removeprefix("Value error, ")
    if _located(message):
        # Cross-field checks name their own paths (``search_space.tp: ...``), one per line;
        # the value they saw is the whole study, which says nothing.
        return message
    shown = _short(value)
    return f"{path}: {message} (got {shown})"


def _located(message: str) -> bool:
    """Every line starts with a field path of the study (``fixed_flags.port: ...``)."""
    fields = set(StudyConfig.model_fields)
    for line in message.split("\n"):
        head = line.split(":", 1)[0]
        if ":" not in line or " " in head or head.split(".", 1)[0] not in fields:
            return False
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for 'did you mean')."""
    model: type[BaseModel] = StudyConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)
