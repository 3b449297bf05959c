"""Command line of the simulated engine: ``serve`` (HTTP server) and ``predict`` (virtual time).

``python -m worker.sim serve --engine vllm <vLLM flags>`` and ``servetune sim serve ...`` start
a server from exactly the flags the real engine takes; ``predict`` runs the same engine model
in virtual time and prints genai-bench's metrics per concurrency level.

Exit codes: 0 ok; 1 the engine failed (out of memory, wrong GPU count, unknown model), as a
real engine exits; 2 a flag has a bad value (argparse's convention, which the engines share).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from common.traffic import TrafficError, TrafficScenario
from worker.sim.engine import SimEngine
from worker.sim.engine_args import EngineArgsError, parse_engine_argv, visible_gpu_count
from worker.sim.scheduler import EngineCrashed
from worker.sim.virtual import VirtualRun, predict_levels

USAGE = """usage: servetune sim {serve,predict} --engine {vllm,sglang} [engine flags] [--sim-*]

  serve     start the OpenAI-compatible simulated engine (the engine's own flags)
  predict   virtual-time benchmark: --traffic "D(1024,256)" --concurrency 1 8 32
            [--num-requests N] [--max-time-s S] [--json]
  image     build the registry-free Docker image that runs this installation's simulator

Simulator options: --sim-gpu NAME (or $SERVETUNE_SIM_GPU), --sim-seed, --sim-noise,
--sim-startup-scale, --sim-tokenizer DIR, and fault switches --sim-crash-after-requests N,
--sim-hang-at-startup, --sim-slow-startup-s S, --sim-hang-completions,
--sim-oom-above-running C, --sim-http-error-rate R, --sim-http-error-status {429,500,503}.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return serve(rest)
    if command == "predict":
        return predict(rest)
    if command == "image":
        return image(rest)
    print(f"error: unknown command {command!r}; use serve or predict\n\n{USAGE}",
          file=sys.stderr)
    return 2


def serve(argv: list[str]) -> int:
    try:
        args, options = parse_engine_argv(argv)
    except EngineArgsError as e:
        return _usage_error(e)
    if args.ignored_flags:
        print("WARNING [servetune-sim] flags of the real engine that the simulator ignores: "
              + " ".join(args.ignored_flags), file=sys.stderr, flush=True)
    visible = visible_gpu_count()
    if visible is not None and visible != args.world_size:
        return _engine_error(
            f"RuntimeError: the launch needs tp × pp × dp = {args.tp} × {args.pp} × "
            f"{args.dp} = {args.world_size} GPUs but {_gpu_variable()} makes {visible} "
            "visible. "
            + ("The number of required GPUs exceeds the total number of available GPUs."
               if visible < args.world_size else
               "Give the engine exactly the GPUs it uses."))
    try:
        engine = SimEngine.from_args(args, options)
    except EngineArgsError as e:
        return _engine_error(f"ValueError: {e}")
    # Imported here: the HTTP stack is only needed to serve, not to predict or validate.
    import uvicorn

    from worker.sim.server import SimServer, create_app
    from worker.sim.tokens import SimTokenizer

    try:
        tokenizer = SimTokenizer.load(options.tokenizer)
    except (OSError, ValueError) as e:
        return _engine_error(f"OSError: cannot load the tokenizer from "
                             f"{options.tokenizer or 'the shipped directory'}: {e}")
    app = create_app(SimServer(engine, tokenizer))
    # The standard asyncio loop, not uvloop: uvloop computes its poll timeout from a clock
    # cached at the start of each loop iteration, so a step's timer fires late by however
    # long that iteration spent streaming tokens (bench/sim_capacity.py measured 2/3 of steps
    # >5 ms late at 256 streams with uvloop, <1% with asyncio).
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=5, loop="asyncio")
    return 0


def image(argv: list[str]) -> int:
    """Build (if missing) the registry-free image that runs this installation's simulator."""
    if argv:
        print(f"error: `image` takes no arguments, got {argv}", file=sys.stderr)
        return 2
    from common.errors import InfraError
    from worker.sim.image import ensure_sim_image

    try:
        tag = ensure_sim_image()
    except InfraError as e:
        return _engine_error(str(e))
    print(f"{tag}\n\nuse it in a simulated study with:\n  launcher:\n    kind: docker\n"
          f"    image: {tag}\n    pull: never\n    gpu_mode: nvidia_env")
    return 0


def predict(argv: list[str]) -> int:
    own = argparse.ArgumentParser(prog="servetune sim predict", add_help=False)
    own.add_argument("--traffic", default="D(1024,256)")
    own.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    own.add_argument("--num-requests", type=int, default=None)
    own.add_argument("--max-time-s", type=float, default=None)
    own.add_argument("--json", action="store_true")
    ns, engine_argv = own.parse_known_args(argv)
    try:
        traffic = TrafficScenario.parse(ns.traffic)
        if any(c < 1 for c in ns.concurrency):
            raise EngineArgsError(f"--concurrency: {ns.concurrency} must all be >= 1")
        args, options = parse_engine_argv(engine_argv)
    except (EngineArgsError, TrafficError) as e:
        return _usage_error(e)
    try:
        engine = SimEngine.from_args(args, options)
    except EngineArgsError as e:
        return _engine_error(f"ValueError: {e}")
    plan = engine.plan
    report: dict[str, object] = {
        "engine": engine.setup.engine, "model": engine.setup.model.name,
        "gpu": engine.setup.gpu.name, "world_size": engine.setup.world_size,
        "startup_s": round(engine.startup.total_s, 2), "kv_cache_tokens": plan.kv_tokens,
        "failure": plan.failure, "levels": [],
    }
    if plan.failure is None:
        try:
            levels = []
            for c in ns.concurrency:
                run = VirtualRun(num_requests=ns.num_requests or max(4 * c, 32),
                                 max_time_s=ns.max_time_s)
                levels.extend(predict_levels(engine, traffic, [c], run))
            report["levels"] = [level.to_dict() for level in levels]
        except EngineCrashed as crash:
            report["failure"] = str(crash)
    if ns.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    return 1 if report["failure"] else 0


def _print_report(report: dict[str, object]) -> None:
    print(f"{report['engine']} · {report['model']} on {report['world_size']}× {report['gpu']}: "
          f"startup {report['startup_s']} s, KV cache {report['kv_cache_tokens']:,} tokens")
    if report["failure"]:
        print(f"FAILED: {report['failure']}")
        return
    header = (f"{'conc':>5} {'ttft ms':>9} {'p90':>9} {'tpot ms':>8} {'p90':>8} "
              f"{'e2e ms':>9} {'out tok/s':>10} {'total tok/s':>12} {'req/s':>7}")
    print(header)
    for level in report["levels"]:  # type: ignore[attr-defined]
        print(f"{level['concurrency']:>5} {level['ttft_ms']['mean']:>9.1f} "
              f"{level['ttft_ms']['p90']:>9.1f} {level['tpot_ms']['mean']:>8.2f} "
              f"{level['tpot_ms']['p90']:>8.2f} {level['e2e_latency_ms']['mean']:>9.0f} "
              f"{level['output_tokens_per_s']:>10.0f} {level['total_tokens_per_s']:>12.0f} "
              f"{level['requests_per_s']:>7.2f}")


def _gpu_variable() -> str:
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if name in os.environ:
            return f"{name}={os.environ[name]!r}"
    return "the node"


def _usage_error(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def _engine_error(message: str) -> int:
    print(f"ERROR [servetune-sim] {message}", file=sys.stderr, flush=True)
    return 1
