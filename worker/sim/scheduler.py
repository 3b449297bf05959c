"""Continuous-batching scheduler of one data-parallel replica, in the vLLM or SGLang style.

The scheduler decides, step by step, which requests compute how many tokens; ``perf.StepModel``
says how long the step lasts. It knows nothing about wall-clock time: the served mode
(``server.py``) and the virtual-time mode (``virtual.py``) both call ``schedule`` to start a step
and ``finish`` when it ends, which is what makes the two modes agree.

Rules (docs/simulator.md, "Scheduler"):
- vLLM (mixed batches): running requests first, each taking one decode token or its next
  prefill chunk from the step's token budget; KV blocks are allocated on demand and, when none
  are left, the most recently admitted running request is preempted (its KV dropped; it is
  recomputed later). New requests are admitted FCFS while seats (``max_running``), budget and
  blocks remain, unless this step preempted.
- SGLang (prefill-first): if waiting requests fit, the step is a prefill batch of at most
  ``token_budget`` tokens (one request may be chunked across steps); admission reserves KV for
  the expected output of every running request (``new_token_ratio``, decaying as in SGLang);
  otherwise the step decodes every running request, retracting requests if KV runs out.

Not thread-safe: one event loop or one simulation drives a scheduler.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from worker.sim.engine_args import EngineSetup
from worker.sim.kv_cache import KVCache
from worker.sim.perf import GIB, BatchShape, MemoryPlan, StepModel

# SGLang's admission estimate of future decode tokens (init, floor, decay steps).
SGLANG_INIT_NEW_TOKEN_RATIO = 0.7
SGLANG_MIN_NEW_TOKEN_RATIO = 0.7 * 0.14  # init ratio × base minimum factor
SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS = 600
SGLANG_CLIP_MAX_NEW_TOKENS = 4096  # per-request cap of the estimate
# SGLang sorts by prefix match only for short queues (longer ones fall back to FCFS).
SGLANG_LPM_QUEUE_LIMIT = 128


class EngineCrashed(RuntimeError):
    """The simulated engine died (e.g. CUDA out of memory at runtime); message is its log."""


class SimRequest:
    """One generation request inside the engine. Mutable; owned by its replica's scheduler."""

    __slots__ = (
        "rid", "prompt_len", "max_tokens", "hashes", "arrival_s", "num_computed", "num_output",
        "cached_tokens", "private_blocks", "shared", "first_token_s", "finish_s", "preemptions",
        "done", "aborted", "waiter", "commit_stopped",
    )

    def __init__(self, rid: int, prompt_len: int, max_tokens: int,
                 hashes: tuple[int, ...] = (), arrival_s: float = 0.0) -> None:
        self.rid = rid
        self.prompt_len = prompt_len
        self.max_tokens = max_tokens
        self.hashes = hashes
        self.arrival_s = arrival_s
        self.num_computed = 0
        self.num_output = 0
        self.cached_tokens = 0
        self.private_blocks = 0
        self.shared: list[int] = []
        self.first_token_s: float | None = None
        self.finish_s: float | None = None
        self.preemptions = 0
        self.done = False
        self.aborted = False
        self.waiter: object | None = None  # served mode: an asyncio.Future to wake the stream
        self.commit_stopped = False

    @property
    def pending_tokens(self) -> int:
        """Tokens to compute before the next token can be sampled."""
        return self.prompt_len + self.num_output - self.num_computed


@dataclass
class Step:
    """One scheduled engine step: (request, tokens to compute) and its duration."""

    entries: list[tuple[SimRequest, int]]
    duration_s: float
    shape: BatchShape


class ReplicaScheduler:
    """Scheduler + KV cache + step model of one data-parallel replica."""

    def __init__(self, setup: EngineSetup, plan: MemoryPlan, step_model: StepModel,
                 seed: int = 0, noise: float = 0.0,
                 oom_above_running: int | None = None) -> None:
        self.setup = setup
        self.plan = plan
        self.step_model = step_model
        self.kv = KVCache(plan.kv_blocks, setup.block_size, setup.prefix_caching)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.rng = random.Random(seed)
        self.noise = noise
        self.oom_above_running = oom_above_running
        self.new_token_ratio = SGLANG_INIT_NEW_TOKEN_RATIO
        self.steps = 0
        self.preemptions = 0
        self.prompt_tokens_computed = 0
        self.generated_tokens = 0
        self.busy = False

    # -- requests -------------------------------------------------------------------------

    def add(self, req: SimRequest) -> None:
        self.waiting.append(req)

    def abort(self, req: SimRequest) -> None:
        """Drop a request (client went away); frees its KV at once."""
        if req.done or req.aborted:
            return
        req.aborted = True
        if req in self.running:
            self.running.remove(req)
            self._release(req)
        else:
            try:
                self.waiting.remove(req)
            except ValueError:
                pass

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def kv_usage(self) -> float:
        return self.kv.used / self.kv.num_blocks if self.kv.num_blocks else 0.0

    # -- stepping -------------------------------------------------------------------------

    def schedule(self) -> Step | None:
        """Pick the next step's batch, or None when nothing can run now."""
        if self.setup.mixed_batches:
            entries = self._schedule_mixed()
        else:
            entries = self._schedule_prefill_first()
        if not entries:
            return None
        self._check_faults(entries)
        shapes = self._micro_batches(entries)
        duration = self.step_model.step_time(shapes)
        if self.noise > 0:
            duration *= self.rng.lognormvariate(0.0, self.noise)
        self.busy = True
        total = BatchShape(
            tokens=sum(s.tokens for s in shapes), seqs=sum(s.seqs for s in shapes),
            attn_pairs=sum(s.attn_pairs for s in shapes),
            kv_tokens=sum(s.kv_tokens for s in shapes),
            decode_only=all(s.decode_only for s in shapes))
        return Step(entries, duration, total)

    def finish(self, step: Step, now_s: float) -> list[SimRequest]:
        """Apply a step's results at ``now_s``; returns the requests that got a new token."""
        self.busy = False
        self.steps += 1
        emitted: list[SimRequest] = []
        for req, tokens in step.entries:
            if req.aborted:
                continue
            was_prefill = req.num_computed < req.prompt_len
            req.num_computed += tokens
            if was_prefill:
                self.prompt_tokens_computed += min(tokens, req.prompt_len)
                self._commit_prompt_blocks(req)
            if req.pending_tokens > 0:
                continue  # partial prefill chunk: no token sampled yet
            req.num_output += 1
            self.generated_tokens += 1
            if req.first_token_s is None:
                req.first_token_s = now_s
            if req.num_output >= req.max_tokens:
                req.done = True
                req.finish_s = now_s
                self.running.remove(req)
                self._release(req)
            emitted.append(req)
        if not self.setup.mixed_batches and step.shape.decode_only:
            decay = ((SGLANG_INIT_NEW_TOKEN_RATIO - SGLANG_MIN_NEW_TOKEN_RATIO)
                     / SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS)
            self.new_token_ratio = max(SGLANG_MIN_NEW_TOKEN_RATIO, self.new_token_ratio - decay)
        return emitted

    def reset_prefix_cache(self) -> int:
        return self.kv.reset_prefix_cache()

    # -- vLLM ----------------------------------------------------------------------------

    def _schedule_mixed(self) -> list[tuple[SimRequest, int]]:
        budget = self.setup.token_budget
        entries: list[tuple[SimRequest, int]] = []
        preemptions_before = self.preemptions
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            tokens = min(req.pending_tokens, budget)
            if not self._grow(req, tokens):
                break  # the request itself was preempted
            entries.append((req, tokens))
            budget -= tokens
            i += 1
        if self.preemptions != preemptions_before:
            return entries  # vLLM admits nothing new in a step that preempted
        while self.waiting and budget > 0 and len(self.running) < self.setup.max_running:
            req = self.waiting[0]
            tokens = self._admit(req, budget)
            if tokens == 0:
                break
            self.waiting.popleft()
            self.running.append(req)
            entries.append((req, tokens))
            budget -= tokens
        return entries

    def _grow(self, req: SimRequest, tokens: int) -> bool:
        """Allocate blocks for ``tokens`` more tokens, preempting from the back if needed."""
        need = self.kv.blocks_for(req.num_computed + tokens) - self._blocks(req)
        while need > self.kv.available:
            victim = self.running[-1]
            self._preempt(victim)
            if victim is req:
                return False
        if need > 0:
            self.kv.allocate(need)
            req.private_blocks += need
        return True

    # -- SGLang --------------------------------------------------------------------------

    def _schedule_prefill_first(self) -> list[tuple[SimRequest, int]]:
        entries = self._schedule_prefill()
        if entries:
            return entries
        return self._schedule_decode()

    def _schedule_prefill(self) -> list[tuple[SimRequest, int]]:
        budget = self.setup.token_budget
        entries: list[tuple[SimRequest, int]] = []
        # A request chunked by the previous prefill step continues first.
        for req in self.running:
            if req.pending_tokens > 1 and budget > 0:
                tokens = min(req.pending_tokens, budget)
                if not self._allocate(req, tokens):
                    return entries
                entries.append((req, tokens))
                budget -= tokens
        if not self.waiting or budget <= 0:
            return entries
        self._order_waiting()
        bs = self.setup.block_size
        # KV still to be taken by running requests: their expected output (and the unallocated
        # rest of a chunked prompt); allocated blocks are already out of ``available``.
        reserved = sum(self._expected_output(r) + max(r.prompt_len - r.num_computed, 0)
                       for r in self.running)
        while self.waiting and budget > 0 and len(self.running) < self.setup.max_running:
            req = self.waiting[0]
            hit = self._prefix_hit(req)
            remaining = req.prompt_len + req.num_output - hit * bs
            if not self.setup.chunked_prefill and remaining > budget and entries:
                break
            expected = self._expected_output(req)
            if self.kv.available * bs - reserved < remaining + expected:
                break
            tokens = self._admit(req, budget)
            if tokens == 0:
                break
            reserved += (remaining - tokens) + expected
            self.waiting.popleft()
            self.running.append(req)
            entries.append((req, tokens))
            budget -= tokens
        return entries

    def _expected_output(self, req: SimRequest) -> int:
        """SGLang's estimate of a request's future decode tokens (capped per request)."""
        remaining = min(req.max_tokens - req.num_output, SGLANG_CLIP_MAX_NEW_TOKENS)
        return int(remaining * self.new_token_ratio)

    def _schedule_decode(self) -> list[tuple[SimRequest, int]]:
        entries: list[tuple[SimRequest, int]] = []
        decoding = [r for r in self.running if r.pending_tokens == 1]
        need = sum(self.kv.blocks_for(r.num_computed + 1) - self._blocks(r) for r in decoding)
        while need > self.kv.available and decoding:
            # SGLang retracts the request with the fewest output tokens (longest input first).
            victim = min(decoding, key=lambda r: (r.num_output, -r.prompt_len))
            decoding.remove(victim)
            need -= self.kv.blocks_for(victim.num_computed + 1) - self._blocks(victim)
            self._preempt(victim)
            self.new_token_ratio = SGLANG_INIT_NEW_TOKEN_RATIO
        for req in decoding:
            self._allocate(req, 1)
            entries.append((req, 1))
        return entries

    def _order_waiting(self) -> None:
        policy = self.setup.schedule_policy
        if policy in ("fcfs", "priority") or len(self.waiting) < 2:
            return
        items = list(self.waiting)
        if policy in ("lpm", "dfs-weight"):
            if len(items) > SGLANG_LPM_QUEUE_LIMIT:
                return
            items.sort(key=lambda r: -self.kv.match(r.hashes))
        elif policy == "lof":
            items.sort(key=lambda r: -r.max_tokens)
        elif policy == "random":
            self.rng.shuffle(items)
        self.waiting = deque(items)

    # -- shared --------------------------------------------------------------------------

    def _admit(self, req: SimRequest, budget: int) -> int:
        """Reserve KV for the first chunk of a waiting request; 0 if it cannot start now."""
        bs = self.setup.block_size
        hit = self._prefix_hit(req)
        computed = hit * bs
        remaining = req.prompt_len + req.num_output - computed
        if not self.setup.chunked_prefill:
            if remaining > budget and budget < self.setup.token_budget:
                return 0  # does not fit beside others; a prompt alone may exceed the budget
            budget = max(budget, remaining)
        tokens = min(remaining, budget)
        cached = req.hashes[:hit]
        # Blocks we would take a reference on stop being evictable: count them as used.
        idle_hits = self.kv.idle_count(cached)
        need = self.kv.blocks_for(computed + tokens) - hit
        if need > self.kv.available - idle_hits:
            return 0
        self.kv.acquire(cached)
        self.kv.allocate(need)
        req.shared = list(cached)
        req.private_blocks = need
        req.num_computed = computed
        req.cached_tokens = max(req.cached_tokens, computed)
        if req.prompt_len:
            self.kv.queried_tokens += req.prompt_len
            self.kv.hit_tokens += computed
        return tokens

    def _prefix_hit(self, req: SimRequest) -> int:
        # At least one prompt token is always computed, so a full hit is trimmed by a block.
        hit = self.kv.match(req.hashes)
        max_blocks = max(req.prompt_len - 1, 0) // self.setup.block_size
        return min(hit, max_blocks)

    def _allocate(self, req: SimRequest, tokens: int) -> bool:
        need = self.kv.blocks_for(req.num_computed + tokens) - self._blocks(req)
        if need <= 0:
            return True
        if not self.kv.allocate(need):
            return False
        req.private_blocks += need
        return True

    def _preempt(self, req: SimRequest) -> None:
        self.running.remove(req)
        self._release(req)
        req.num_computed = 0
        req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)

    def _release(self, req: SimRequest) -> None:
        self.kv.release(req.private_blocks, req.shared)
        req.private_blocks = 0
        req.shared = []
        req.commit_stopped = False

    def _commit_prompt_blocks(self, req: SimRequest) -> None:
        if req.commit_stopped or not self.kv.prefix_caching:
            return
        full = min(req.num_computed, req.prompt_len) // self.setup.block_size
        while len(req.shared) < min(full, len(req.hashes)) and req.private_blocks > 0:
            h = req.hashes[len(req.shared)]
            if not self.kv.commit(h):
                req.commit_stopped = True
                return
            req.private_blocks -= 1
            req.shared.append(h)

    @staticmethod
    def _blocks(req: SimRequest) -> int:
        return len(req.shared) + req.private_blocks

    def _micro_batches(self, entries: list[tuple[SimRequest, int]]) -> list[BatchShape]:
        pp = self.setup.pp
        groups: list[list[tuple[SimRequest, int]]] = [[] for _ in range(min(pp, len(entries)))]
        loads = [0] * len(groups)
        for entry in sorted(entries, key=lambda e: -e[1]) if pp > 1 else entries:
            target = loads.index(min(loads))
            groups[target].append(entry)
            loads[target] += entry[1]
        return [_shape(group) for group in groups]

    def _check_faults(self, entries: list[tuple[SimRequest, int]]) -> None:
        running = len(self.running)
        if self.oom_above_running is not None and running > self.oom_above_running:
            raise EngineCrashed(_runtime_oom(self.plan, 2.0, running))
        if self.setup.engine == "sglang":
            tokens = sum(t for _, t in entries)
            need = (self.step_model.activation_bytes(tokens, len(entries)) / GIB
                    + self.plan.graph_gib)
            if need > self.plan.headroom_gib:
                raise EngineCrashed(_runtime_oom(self.plan, need - self.plan.headroom_gib,
                                                 running))


def _shape(entries: list[tuple[SimRequest, int]]) -> BatchShape:
    tokens = seqs = kv_tokens = 0
    attn = 0.0
    decode_only = True
    for req, n in entries:
        tokens += n
        attn += n * (req.num_computed + (n + 1) / 2)
        kv_tokens += req.num_computed + n
        if n == req.pending_tokens:
            seqs += 1
        if n != 1 or req.num_output == 0:
            decode_only = False
    return BatchShape(tokens=tokens, seqs=seqs, attn_pairs=attn, kv_tokens=kv_tokens,
                      decode_only=decode_only)


def _runtime_oom(plan: MemoryPlan, short_gib: float, running: int) -> str:
    return (f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
            f"{max(short_gib, 0.01):.2f} GiB. GPU 0 has a total capacity of "
            f"{plan.total_gib:.2f} GiB of which {max(plan.headroom_gib * 0.1, 0.01):.2f} GiB "
            f"is free. (running requests: {running})")
