"""One simulated engine deployment: parsed flags, memory plan, startup and its replicas.

``SimEngine.from_argv`` turns an engine command line into the objects both modes run:
``plan`` (memory, and the startup failure if the config does not fit), ``startup`` (phase
times) and ``replicas`` (one scheduler per data-parallel rank behind a round-robin router).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from worker.sim.catalog import find_gpu, find_model
from worker.sim.engine_args import (
    EngineArgs,
    EngineArgsError,
    EngineSetup,
    SimOptions,
    parse_engine_argv,
    resolve,
)
from worker.sim.perf import MemoryPlan, StartupTimes, StepModel, plan_memory, startup_times
from worker.sim.scheduler import ReplicaScheduler, SimRequest


@dataclass(frozen=True)
class RequestRejected(Exception):
    """The engine refuses a request up front (HTTP 400 in served mode)."""

    message: str


class SimEngine:
    """A deployment of the simulated engine. Not thread-safe; one event loop drives it."""

    def __init__(self, setup: EngineSetup, options: SimOptions) -> None:
        self.setup = setup
        self.options = options
        self.step_model = StepModel(setup)
        self.plan: MemoryPlan = plan_memory(setup, self.step_model)
        self.startup: StartupTimes = startup_times(setup, self.plan)
        self.replicas: list[ReplicaScheduler] = []
        if self.plan.failure is None:
            self.replicas = [
                ReplicaScheduler(setup, self.plan, self.step_model,
                                 seed=options.seed * 1009 + rank, noise=options.noise,
                                 oom_above_running=options.oom_above_running)
                for rank in range(setup.dp)
            ]
        self._next_replica = itertools.cycle(range(max(len(self.replicas), 1)))
        self._ids = itertools.count()

    @classmethod
    def from_argv(cls, argv: list[str]) -> SimEngine:
        args, options = parse_engine_argv(argv)
        return cls.from_args(args, options)

    @classmethod
    def from_args(cls, args: EngineArgs, options: SimOptions) -> SimEngine:
        try:
            model = find_model(args.model)
            gpu = find_gpu(options.gpu)
        except ValueError as e:
            raise EngineArgsError(str(e)) from e
        return cls(resolve(args, model, gpu), options)

    @property
    def failed(self) -> bool:
        return self.plan.failure is not None

    def new_request(self, prompt_len: int, max_tokens: int, hashes: tuple[int, ...] = (),
                    arrival_s: float = 0.0, requested_max_tokens: int | None = None
                    ) -> SimRequest:
        """Check a request against the engine's limits and build it (not yet routed).

        ``max_tokens`` is what the reply will have; ``requested_max_tokens`` (default: the
        same) is the client's limit, which the engine validates as vLLM does."""
        limit = self.setup.max_model_len
        requested = max_tokens if requested_max_tokens is None else requested_max_tokens
        if prompt_len + requested > limit:
            raise RequestRejected(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {prompt_len + requested} tokens ({prompt_len} in the messages, "
                f"{requested} in the completion). Please reduce the length of the messages "
                "or completion.")
        if max_tokens < 1:
            raise RequestRejected(f"max_tokens must be at least 1, got {max_tokens}.")
        capacity = self.plan.kv_tokens
        if prompt_len + max_tokens > capacity:
            raise RequestRejected(
                f"The request needs {prompt_len + max_tokens} tokens of KV cache but one "
                f"replica holds {capacity}.")
        return SimRequest(next(self._ids), prompt_len, max_tokens, hashes, arrival_s)

    def route(self) -> ReplicaScheduler:
        """The replica the next request goes to (round robin across data-parallel ranks)."""
        return self.replicas[next(self._next_replica)]

    def reset_prefix_cache(self) -> int:
        return sum(r.reset_prefix_cache() for r in self.replicas)

    def describe(self) -> list[str]:
        """Log lines an engine prints at startup, with the figures that matter for tuning."""
        s, p = self.setup, self.plan
        lines = [
            f"Simulated {s.engine} engine: model {s.model.name} on {s.gpu.name}, "
            f"tp={s.tp} pp={s.pp} dp={s.dp} (world size {s.world_size})",
            f"max_running={s.max_running} token_budget={s.token_budget} "
            f"chunked_prefill={s.chunked_prefill} mem_fraction={s.mem_fraction} "
            f"kv_cache_dtype={s.args.kv_cache_dtype} quantization={s.quantization} "
            f"prefix_caching={s.prefix_caching} cuda_graph_max_bs={s.cuda_graph_max_bs}",
            f"Model weights take {p.weights_gib:.2f} GiB per GPU; peak activation "
            f"{p.activation_gib:.2f} GiB; CUDA graphs {p.graph_gib:.2f} GiB",
        ]
        if p.failure is None:
            lines.append(f"GPU KV cache size: {p.kv_tokens:,} tokens ({p.kv_gib:.2f} GiB)")
            lines.append(
                f"Maximum concurrency for {s.max_model_len:,} tokens per request: "
                f"{p.kv_tokens / s.max_model_len:.2f}x")
        return lines
