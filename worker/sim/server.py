"""The simulated engine's OpenAI-compatible HTTP server.

One asyncio event loop runs everything: the HTTP routes (Starlette under uvicorn) and one step
loop per data-parallel replica. A step loop asks its scheduler for a batch, sleeps until the
step's modelled end (anchored to the previous step's end, so lag does not accumulate), then
hands each request its new tokens; streams wake on a per-request future and write SSE chunks.

Lifecycle, as real engines behave: the port opens at once and ``/health`` answers 503 while the
simulated startup (weight load, compile, CUDA graphs; scaled by ``--sim-startup-scale``) runs;
a config that does not fit exits non-zero with the engine's out-of-memory message; a runtime
failure (OOM at a concurrency, a fault switch) logs the engine's error and exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from worker.sim.engine import RequestRejected, SimEngine
from worker.sim.scheduler import EngineCrashed, ReplicaScheduler, SimRequest
from worker.sim.tokens import SimTokenizer, render_chat

logger = logging.getLogger("servetune.sim")

# Mean length of a reply that stops at EOS (requests without ignore_eos / min_tokens).
NATURAL_REPLY_MEAN_TOKENS = 256


class StepLagStats:
    """How late step completions run against the model's schedule (seconds)."""

    BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, float("inf"))

    def __init__(self) -> None:
        self.steps = 0
        self.total = 0.0
        self.max = 0.0
        self.counts = [0] * len(self.BUCKETS_S)

    def add(self, lag_s: float) -> None:
        self.steps += 1
        self.total += lag_s
        self.max = max(self.max, lag_s)
        for i, bound in enumerate(self.BUCKETS_S):
            if lag_s <= bound:
                self.counts[i] += 1
                break

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus histogram buckets: (upper bound, steps with lag <= bound)."""
        running, out = 0, []
        for bound, count in zip(self.BUCKETS_S, self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else str(bound), running))
        return out


class SimServer:
    """State of one simulated engine process. All methods run on the event loop."""

    def __init__(self, engine: SimEngine, tokenizer: SimTokenizer) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.options = engine.options
        self.model_name = engine.setup.served_model_name
        self.ready = False
        self.requests_received = 0
        self.rng = random.Random(self.options.seed)
        self.lag = StepLagStats()
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self._wakeups: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.created = int(time.time())
        # JSON-escaped generation words, so a streamed token costs one string join.
        self.escaped_words = [json.dumps(w) for w in tokenizer.word_tokens]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin the simulated startup in the background (the port is already open)."""
        self._tasks.append(asyncio.create_task(self._startup()))

    async def _startup(self) -> None:
        engine, opts = self.engine, self.options
        for line in engine.describe():
            _log(line)
        scale = opts.startup_scale
        for phase, seconds in engine.startup.phases.items():
            await asyncio.sleep(seconds * scale)
            _log(f"{phase} took {seconds:.2f} s (simulated; waited {seconds * scale:.2f} s)")
        if engine.plan.failure is not None:
            _die(engine.plan.failure)
        if opts.slow_startup_s:
            await asyncio.sleep(opts.slow_startup_s)
        if opts.hang_at_startup:
            _log("fault: hanging at startup (health stays 503)")
            await asyncio.Event().wait()
        for replica in engine.replicas:
            event = asyncio.Event()
            self._wakeups.append(event)
            self._tasks.append(asyncio.create_task(self._step_loop(replica, event)))
        self.ready = True
        _log(f"Engine ready after {engine.startup.total_s:.1f} s (simulated). "
             "Application startup complete.")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _step_loop(self, replica: ReplicaScheduler, wakeup: asyncio.Event) -> None:
        # time.monotonic, not loop.time(): uvloop caches its clock once per loop iteration, and
        # an iteration that streams hundreds of tokens would make every sleep overshoot.
        clock = time.monotonic
        start: float | None = None
        try:
            while True:
                if not replica.has_work:
                    wakeup.clear()
                    await wakeup.wait()
                    start = None
                now = clock()
                if start is None or start < now - 0.05:
                    start = now  # idle, or hopelessly behind: restart the schedule from now
                step = replica.schedule()
                if step is None:
                    wakeup.clear()
                    await wakeup.wait()
                    start = None
                    continue
                end = start + step.duration_s
                while (delay := end - clock()) > 0:
                    await asyncio.sleep(delay)
                self.lag.add(clock() - end)
                for req in replica.finish(step, end):
                    self.generation_tokens_total += 1
                    waiter = req.waiter
                    if waiter is not None and not waiter.done():  # type: ignore[attr-defined]
                        waiter.set_result(None)  # type: ignore[attr-defined]
                start = end
        except EngineCrashed as crash:
            _die(str(crash))

    def submit(self, prompt_tokens: int, output_tokens: int, hashes: tuple[int, ...],
               max_tokens: int) -> tuple[SimRequest, ReplicaScheduler]:
        req = self.engine.new_request(prompt_tokens, output_tokens, hashes, time.monotonic(),
                                      requested_max_tokens=max_tokens)
        replica = self.engine.route()
        self.prompt_tokens_total += prompt_tokens
        if not self.options.hang_completions:
            replica.add(req)
            self._wakeups[self.engine.replicas.index(replica)].set()
        return req, replica

    def block_hashes(self, ids: list[int]) -> tuple[int, ...]:
        """Chained hashes of the prompt's full KV blocks (prefix-cache identity)."""
        if not self.engine.setup.prefix_caching:
            return ()
        bs = self.engine.setup.block_size
        hashes = []
        h = 0
        for i in range(0, len(ids) - bs + 1, bs):
            h = hash((h, tuple(ids[i:i + bs])))
            hashes.append(h)
        return tuple(hashes)

    def fault_for_request(self) -> Response | None:
        """Apply the per-request fault switches; a response means "answer with this"."""
        opts = self.options
        self.requests_received += 1
        if opts.crash_after_requests is not None and (
                self.requests_received > opts.crash_after_requests):
            _die("RuntimeError: CUDA error: an illegal memory access was encountered\n"
                 "CUDA kernel errors might be asynchronously reported at some other API call, "
                 "so the stacktrace below might be incorrect. (fault: crash after "
                 f"{opts.crash_after_requests} requests)")
        if opts.http_error_rate and self.rng.random() < opts.http_error_rate:
            status = opts.http_error_status
            message = {429: "Too many requests", 500: "Internal server error",
                       503: "Service unavailable"}[status]
            return _error(status, message, "ServerError" if status >= 500 else "RateLimitError")
        return None


def create_app(server: SimServer) -> Starlette:
    """The ASGI app serving one simulated engine."""

    async def health(request: Request) -> Response:
        if not server.ready:
            return PlainTextResponse("loading", status_code=503)
        return Response(status_code=200)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": server.model_name, "object": "model", "created": server.created,
            "owned_by": server.engine.setup.engine, "root": server.engine.setup.args.model,
            "max_model_len": server.engine.setup.max_model_len}]})

    async def completions(request: Request) -> Response:
        return await _generate(server, request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await _generate(server, request, chat=True)

    async def metrics(request: Request) -> Response:
        registry = CollectorRegistry()
        registry.register(_Collector(server))
        return Response(generate_latest(registry),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    async def reset_prefix_cache(request: Request) -> Response:
        dropped = server.engine.reset_prefix_cache()
        _log(f"prefix cache reset: {dropped} cached blocks dropped")
        if server.engine.setup.engine == "sglang":
            return PlainTextResponse("Cache flushed.\nPlease check backend logs for more details.")
        return Response(status_code=200)

    async def version(request: Request) -> Response:
        return JSONResponse({"version": f"servetune-sim ({server.engine.setup.engine})"})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/reset_prefix_cache", reset_prefix_cache, methods=["POST"]),
        Route("/flush_cache", reset_prefix_cache, methods=["GET", "POST"]),
        Route("/version", version, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    return Starlette(routes=routes, lifespan=lifespan)


async def _generate(server: SimServer, request: Request, chat: bool) -> Response:
    if not server.ready:
        return _error(503, "The engine is still loading.", "ServiceUnavailable")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "Request body is not valid JSON.", "BadRequestError")
    if not isinstance(body, dict):
        return _error(400, "Request body must be a JSON object.", "BadRequestError")
    fault = server.fault_for_request()
    if fault is not None:
        return fault
    model = body.get("model")
    if model is not None and model != server.model_name:
        return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
    try:
        ids = _prompt_ids(server.tokenizer, body, chat)
        max_tokens = _max_tokens(body, len(ids), server.engine.setup.max_model_len)
        output_tokens = _output_tokens(server, body, max_tokens)
        req, replica = server.submit(len(ids), output_tokens, server.block_hashes(ids),
                                     max_tokens)
    except (ValueError, TypeError) as e:
        return _error(400, str(e), "BadRequestError")
    except RequestRejected as e:
        return _error(400, e.message, "BadRequestError")
    reply = _Reply(server, req, chat, output_tokens < max_tokens)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(reply.stream(replica, include_usage),
                                 media_type="text/event-stream")
    try:
        await reply.wait()
    finally:
        if not req.done:
            replica.abort(req)
    return Response(reply.full_json(), media_type="application/json")


def _prompt_ids(tokenizer: SimTokenizer, body: dict[str, Any], chat: bool) -> list[int]:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list")
        return tokenizer.encode_ids(render_chat(messages, add_generation_prompt=True))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return tokenizer.encode_ids(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return tokenizer.encode_ids(prompt[0])
    raise ValueError("`prompt` must be a string, a one-element list of strings, or token ids")


def _max_tokens(body: dict[str, Any], prompt_tokens: int, max_model_len: int) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return max(max_model_len - prompt_tokens, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {value!r}")
    return value


def _output_tokens(server: SimServer, body: dict[str, Any], max_tokens: int) -> int:
    """Tokens this reply will have: max_tokens with ignore_eos, else a simulated EOS."""
    if body.get("ignore_eos"):
        return max_tokens
    min_tokens = body.get("min_tokens") or 0
    if not isinstance(min_tokens, int) or min_tokens < 0:
        raise ValueError(f"min_tokens must be a non-negative integer, got {min_tokens!r}")
    natural = int(server.rng.expovariate(1.0 / NATURAL_REPLY_MEAN_TOKENS)) + 1
    return max(min(max_tokens, max(natural, min_tokens)), 1)


class _Reply:
    """Formats one request's tokens as OpenAI completion / chat-completion JSON."""

    def __init__(self, server: SimServer, req: SimRequest, chat: bool, stopped: bool) -> None:
        self.server = server
        self.req = req
        self.chat = chat
        self.finish_reason = "stop" if stopped else "length"
        prefix = "chatcmpl" if chat else "cmpl"
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.word_start = req.rid * 7919
        head = json.dumps({"id": self.id, "object": "chat.completion.chunk" if chat
                           else "text_completion", "created": server.created,
                           "model": server.model_name})[:-1]
        if chat:
            self._open = f'data: {head}, "choices": [{{"index": 0, "delta": {{"content": '
            self._close = '}, "logprobs": null, "finish_reason": null}]}\n\n'
        else:
            self._open = f'data: {head}, "choices": [{{"index": 0, "text": '
            self._close = ', "logprobs": null, "finish_reason": null}]}\n\n'
        self._head = head
        self._escaped = server.escaped_words

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.req.done:
            future = loop.create_future()
            self.req.waiter = future
            await future

    async def stream(self, replica: ReplicaScheduler, include_usage: bool) -> AsyncIterator[str]:
        req, loop = self.req, asyncio.get_running_loop()
        sent = 0
        # Like vLLM, the chat role chunk goes out together with the first token.
        role = (f'data: {self._head}, "choices": [{{"index": 0, "delta": {{"role": '
                f'"assistant", "content": ""}}, "logprobs": null, '
                f'"finish_reason": null}}]}}\n\n') if self.chat else ""
        try:
            while True:
                produced = req.num_output
                if produced > sent:
                    chunks = "".join(self._chunk(i) for i in range(sent, produced))
                    yield role + chunks if sent == 0 else chunks
                    sent = produced
                if req.done:
                    break
                future = loop.create_future()
                req.waiter = future
                await future
            yield self._final_chunk()
            if include_usage:
                yield f"data: {self._head}, \"choices\": [], \"usage\": {self._usage()}}}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not req.done:
                replica.abort(req)

    def _chunk(self, i: int) -> str:
        escaped = self._escaped[(self.word_start + i) % len(self._escaped)]
        return f"{self._open}{escaped}{self._close}"

    def _final_chunk(self) -> str:
        delta = '"delta": {}' if self.chat else '"text": ""'
        return (f'data: {self._head}, "choices": [{{"index": 0, {delta}, "logprobs": null, '
                f'"finish_reason": "{self.finish_reason}"}}]}}\n\n')

    def _usage(self) -> str:
        req = self.req
        usage: dict[str, Any] = {"prompt_tokens": req.prompt_len,
                                 "completion_tokens": req.num_output,
                                 "total_tokens": req.prompt_len + req.num_output}
        if req.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": req.cached_tokens}
        return json.dumps(usage)

    def full_json(self) -> str:
        text = self.server.tokenizer.text_for(self.req.num_output, self.word_start)
        if self.chat:
            choice = (f'{{"index": 0, "message": {{"role": "assistant", "content": '
                      f'{json.dumps(text)}}}, "logprobs": null, '
                      f'"finish_reason": "{self.finish_reason}"}}')
            kind = "chat.completion"
        else:
            choice = (f'{{"index": 0, "text": {json.dumps(text)}, "logprobs": null, '
                      f'"finish_reason": "{self.finish_reason}"}}')
            kind = "text_completion"
        head = self._head.replace('"chat.completion.chunk"', f'"{kind}"')
        return f'{head}, "choices": [{choice}], "usage": {self._usage()}}}'


class _Collector:
    """Prometheus metrics in the engine's own names (vllm:* or sglang:*)."""

    def __init__(self, server: SimServer) -> None:
        self.server = server

    def collect(self):  # type: ignore[no-untyped-def]
        s = self.server
        engine = s.engine.setup.engine
        replicas = s.engine.replicas
        running = sum(len(r.running) for r in replicas)
        waiting = sum(len(r.waiting) for r in replicas)
        usage = (sum(r.kv_usage for r in replicas) / len(replicas)) if replicas else 0.0
        preemptions = sum(r.preemptions for r in replicas)
        hits = sum(r.kv.hit_tokens for r in replicas)
        queries = sum(r.kv.queried_tokens for r in replicas)
        labels = ["model_name"]
        value = [s.model_name]
        if engine == "vllm":
            names = {"running": "vllm:num_requests_running",
                     "waiting": "vllm:num_requests_waiting",
                     "usage": "vllm:kv_cache_usage_perc",
                     "prompt": "vllm:prompt_tokens", "generation": "vllm:generation_tokens",
                     "preemptions": "vllm:num_preemptions",
                     "hits": "vllm:prefix_cache_hits", "queries": "vllm:prefix_cache_queries"}
        else:
            names = {"running": "sglang:num_running_reqs", "waiting": "sglang:num_queue_reqs",
                     "usage": "sglang:token_usage",
                     "prompt": "sglang:prompt_tokens", "generation": "sglang:generation_tokens",
                     "preemptions": "sglang:num_retractions",
                     "hits": "sglang:cached_tokens", "queries": "sglang:prefix_queried_tokens"}
        for key, help_text, number in (
                ("running", "Requests running on the GPUs.", running),
                ("waiting", "Requests waiting to be scheduled.", waiting),
                ("usage", "KV-cache usage (1 = full).", usage)):
            gauge = GaugeMetricFamily(names[key], help_text, labels=labels)
            gauge.add_metric(value, number)
            yield gauge
        for key, help_text, number in (
                ("prompt", "Prompt tokens received.", s.prompt_tokens_total),
                ("generation", "Tokens generated.", s.generation_tokens_total),
                ("preemptions", "Requests preempted for lack of KV cache.", preemptions),
                ("hits", "Prompt tokens served from the prefix cache.", hits),
                ("queries", "Prompt tokens looked up in the prefix cache.", queries)):
            counter = CounterMetricFamily(names[key], help_text, labels=labels)
            counter.add_metric(value, number)
            yield counter
        lag = GaugeMetricFamily("servetune_sim_step_lag_max_seconds",
                                "Largest delay of a step's end behind the model's schedule.")
        lag.add_metric([], s.lag.max)
        yield lag
        histogram = HistogramMetricFamily(
            "servetune_sim_step_lag_seconds",
            "Delay of each step's end behind the model's schedule.")
        histogram.add_metric([], s.lag.cumulative(), sum_value=s.lag.total)
        yield histogram


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"object": "error", "message": message, "type": kind,
                         "param": None, "code": status}, status_code=status)


def _log(line: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"INFO {stamp} [servetune-sim] {line}", flush=True)


def _die(message: str) -> None:
    """Print the engine's fatal error and exit at once, as a crashing engine process does."""
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"ERROR {stamp} [servetune-sim] {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)
