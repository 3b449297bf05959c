"""Virtual-time mode: benchmark a simulated deployment without HTTP, threads or sleeping.

A discrete-event simulation of genai-bench's closed loop: ``concurrency`` users each send a
request, wait for its last token, and send the next, until ``num_requests`` have been sent (or
``max_time_s`` of simulated time has passed). The engine side is the very scheduler and step
model the HTTP server runs, so predictions match a served benchmark of the same config (a test
holds them to each other). A level costs milliseconds of CPU per thousand engine steps.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass

from common.benchmark import LevelMetrics, RequestRecord, summarize
from common.traffic import TrafficScenario
from worker.sim.engine import RequestRejected, SimEngine
from worker.sim.scheduler import ReplicaScheduler, Step

_ARRIVE, _STEP_END = 0, 1


@dataclass(frozen=True)
class VirtualRun:
    """Tunables of a virtual benchmark run (defaults mirror a small genai-bench run)."""

    num_requests: int = 64
    max_time_s: float | None = None
    seed: int = 0
    # API-server and client overheads a served benchmark sees (measured on the simulator's own
    # server with genai-bench, docs/simulator.md): request parsing and tokenization before the
    # engine sees a request, and response delivery after a token is produced.
    ingress_s: float = 1.5e-3
    egress_s: float = 2.0e-3
    # The benchmark client prepares each request (samples and tokenizes the prompt) on one
    # thread before it starts the clock, so simultaneous users' requests go out one after
    # another: base + per prompt token.
    client_prepare_s: float = 0.5e-3
    client_prepare_per_token_s: float = 3e-6
    # Extra client think time between a response's end and the user's next request.
    turnaround_s: float = 0.0
    # Completed requests left out of the statistics, in completion order (genai-bench's
    # --warmup-ratio × requests): the synchronized first wave of a closed loop.
    warmup_requests: int = 0
    # Prompt tokens every request shares (a system prompt), for prefix-cache studies.
    shared_prefix_tokens: int = 0


def predict(engine: SimEngine, traffic: TrafficScenario, concurrency: int,
            run: VirtualRun | None = None) -> LevelMetrics:
    """Simulate one benchmark level on a fresh copy of ``engine``'s deployment.

    Raises ``scheduler.EngineCrashed`` if the engine dies during the run (e.g. OOM at this
    concurrency), and ``ValueError`` if the deployment failed at startup.
    """
    if engine.failed:
        raise ValueError(f"the engine failed at startup: {engine.plan.failure}")
    run = run or VirtualRun()
    fresh = SimEngine(engine.setup, engine.options)
    return _Simulation(fresh, traffic, concurrency, run).run()


def predict_levels(engine: SimEngine, traffic: TrafficScenario, concurrencies: list[int],
                   run: VirtualRun | None = None) -> list[LevelMetrics]:
    return [predict(engine, traffic, c, run) for c in concurrencies]


class _Simulation:
    def __init__(self, engine: SimEngine, traffic: TrafficScenario, concurrency: int,
                 run: VirtualRun) -> None:
        self.engine = engine
        self.traffic = traffic
        self.concurrency = concurrency
        self.run_cfg = run
        self.rng = random.Random(run.seed)
        self.events: list[tuple[float, int, int, object]] = []
        self.order = itertools.count()
        self.sent = 0
        self.errors = 0
        self.records: list[RequestRecord] = []
        self.unique_hash = itertools.count(1 << 40)
        bs = engine.setup.block_size
        self.shared_hashes = tuple(range(1, run.shared_prefix_tokens // bs + 1))

    def run(self) -> LevelMetrics:
        self.client_free_s = 0.0
        for _ in range(self.concurrency):
            self._next_request(0.0)
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if kind == _ARRIVE:
                self._arrive(now, *payload)  # type: ignore[misc]
            else:
                replica, step = payload  # type: ignore[misc]
                self._step_end(now, replica, step)
        return summarize(str(self.traffic), self.concurrency, self.records, self.errors,
                         warmup=self.run_cfg.warmup_requests)

    def _push(self, when: float, kind: int, payload: object) -> None:
        heapq.heappush(self.events, (when, next(self.order), kind, payload))

    def _arrive(self, now: float, sent_s: float, prompt: int, output: int) -> None:
        """A request reaches the engine at ``now``; the client sent it at ``sent_s``."""
        cfg = self.run_cfg
        if cfg.max_time_s is not None and sent_s >= cfg.max_time_s:
            return
        try:
            req = self.engine.new_request(prompt, output, self._hashes(prompt), sent_s)
        except RequestRejected:
            self.errors += 1
            self._next_request(now + cfg.egress_s)
            return
        replica = self.engine.route()
        replica.add(req)
        if not replica.busy:
            self._start(now, replica)

    def _step_end(self, now: float, replica: ReplicaScheduler, step: Step) -> None:
        for req in replica.finish(step, now):
            if not req.done:
                continue
            assert req.first_token_s is not None
            egress = self.run_cfg.egress_s
            self.records.append(RequestRecord(req.arrival_s, req.first_token_s + egress,
                                              now + egress, req.prompt_len, req.num_output))
            self._next_request(now + egress)
        self._start(now, replica)

    def _next_request(self, response_end_s: float) -> None:
        """The user whose response ended prepares and sends its next request."""
        cfg = self.run_cfg
        if self.sent >= cfg.num_requests:
            return
        self.sent += 1
        prompt, output = self.traffic.sample(self.rng)
        ready = max(response_end_s + cfg.turnaround_s, self.client_free_s)
        sent = ready + cfg.client_prepare_s + cfg.client_prepare_per_token_s * prompt
        self.client_free_s = sent
        self._push(sent + cfg.ingress_s, _ARRIVE, (sent, prompt, output))

    def _start(self, now: float, replica: ReplicaScheduler) -> None:
        step = replica.schedule()
        if step is not None:
            self._push(now + step.duration_s, _STEP_END, (replica, step))

    def _hashes(self, prompt_tokens: int) -> tuple[int, ...]:
        if not self.engine.setup.prefix_caching:
            return ()
        blocks = prompt_tokens // self.engine.setup.block_size
        shared = self.shared_hashes[:blocks]
        return shared + tuple(next(self.unique_hash) for _ in range(blocks - len(shared)))
