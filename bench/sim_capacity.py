"""How many streams and streamed tokens per second one simulated-engine process sustains on
one core, while its steps stay within 5 ms of the performance model's schedule.

Runs the server pinned to CPU 0 and an asyncio load generator (aiohttp) pinned to CPU 1. For
each concurrency level, every user streams /v1/completions replies of --output-tokens tokens
back to back; after a warm-up, the script counts the tokens clients received and reads the
server's step-lag histogram from /metrics. The baseline, measured in the same run, is what the
performance model says the engine emits at that concurrency (virtual-time prediction): the
ratio received / model shows whether the process keeps up.

    .venv/bin/python bench/sim_capacity.py [--levels 64 128 256 512] [--seconds 10]

Target (issue: simulated engine): >= 256 streams and >= 5,000 tokens/s with >= 99% of steps
within 5 ms of the model.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.traffic import TrafficScenario  # noqa: E402
from worker.sim.engine import SimEngine  # noqa: E402
from worker.sim.virtual import VirtualRun, predict  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[64, 256, 512, 1024])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--output-tokens", type=int, default=512)
    parser.add_argument("--gpu", default="H100",
                        help="simulated GPU: sets the step time, hence the token rate asked for")
    args = parser.parse_args()
    flags = ["--engine", "vllm", MODEL, "--sim-gpu", args.gpu, "--max-num-seqs", "1024"]
    port = _free_port()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "worker.sim", "serve", *flags, "--port", str(port),
         "--sim-startup-scale", "0"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        engine = SimEngine.from_argv(flags)
        traffic = TrafficScenario.parse(f"D(16,{args.output_tokens})")
        print(f"simulated engine: vllm {MODEL} on {args.gpu}; server on CPU 0, clients on "
              f"CPU 1; {args.seconds:.0f} s per level after {args.warmup:.0f} s warm-up")
        print(f"{'streams':>7} {'tok/s recv':>10} {'tok/s model':>11} {'ratio':>6} "
              f"{'steps':>6} {'<=5ms':>7} {'lag p99':>8} {'srv CPU':>7}")
        for level in args.levels:
            model_rate = predict(engine, traffic, level, VirtualRun(
                num_requests=level * 3, ingress_s=0, egress_s=0, client_prepare_s=0,
                client_prepare_per_token_s=0)).output_tokens_per_s
            before = _lag(url)
            cpu_before = _cpu_seconds(server.pid)
            received = _run_clients(url, level, args.output_tokens, args.warmup, args.seconds)
            cpu = (_cpu_seconds(server.pid) - cpu_before) / (args.warmup + args.seconds)
            after = _lag(url)
            steps, within, p99 = _lag_delta(before, after)
            rate = received / args.seconds
            print(f"{level:>7} {rate:>10.0f} {model_rate:>11.0f} {rate / model_rate:>6.2f} "
                  f"{steps:>6} {within:>7.1%} {p99 * 1e3:>6.1f}ms {cpu:>7.0%}")
            time.sleep(1.0)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


def _run_clients(url: str, users: int, output_tokens: int, warmup: float,
                 seconds: float) -> int:
    queue: mp.Queue[int] = mp.Queue()
    proc = mp.Process(target=_client_process, args=(url, users, output_tokens, warmup,
                                                    seconds, queue))
    proc.start()
    received = queue.get(timeout=warmup + seconds + 120)
    proc.join(timeout=30)
    return received


def _client_process(url: str, users: int, output_tokens: int, warmup: float, seconds: float,
                    queue: mp.Queue[int]) -> None:
    os.sched_setaffinity(0, {1})
    queue.put(asyncio.run(_clients(url, users, output_tokens, warmup, seconds)))


async def _clients(url: str, users: int, output_tokens: int, warmup: float,
                   seconds: float) -> int:
    import aiohttp

    loop = asyncio.get_running_loop()
    start = loop.time()
    window = (start + warmup, start + warmup + seconds)
    counted = 0
    body = {"prompt": "Shall I compare thee to a summer's day?", "max_tokens": output_tokens,
            "ignore_eos": True, "stream": True}

    async def user(session: aiohttp.ClientSession) -> None:
        nonlocal counted
        while loop.time() < window[1]:
            async with session.post(url + "/v1/completions", json=body) as response:
                async for line in response.content:
                    if line.startswith(b"data: {") and b'"finish_reason": null' in line:
                        if window[0] <= loop.time() < window[1]:
                            counted += 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(user(session)) for _ in range(users)]
        await asyncio.sleep(warmup + seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return counted


def _lag(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "servetune_sim_step_lag_seconds":
            return {s.labels["le"]: s.value for s in family.samples
                    if s.name.endswith("_bucket")}
    raise RuntimeError("server exposes no step-lag histogram")


def _lag_delta(before: dict[str, float], after: dict[str, float]) -> tuple[int, float, float]:
    bounds = sorted(after, key=lambda b: float("inf") if b == "+Inf" else float(b))
    delta = {b: after[b] - before.get(b, 0.0) for b in bounds}
    steps = int(delta["+Inf"])
    if not steps:
        return 0, 1.0, 0.0
    within = delta["0.005"] / steps
    p99 = next((float("inf") if b == "+Inf" else float(b))
               for b in bounds if delta[b] >= 0.99 * steps)
    return steps, within, p99


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in 30 s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
