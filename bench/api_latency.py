"""Latency of the read API's main routes on a large database, at 50 concurrent clients.

Fills a PostgreSQL database (a throwaway cluster, or --database-url) with --studies studies
of --trials-per-study trials each and --levels benchmark runs per trial (default: 100 ×
1,000 trials, 10 runs each: 100,000 trials and 1,000,000 runs), generated server-side with
INSERT ... SELECT over generate_series (seconds, not minutes). Then starts ``servetune serve``
(one uvicorn process) and, as the floor, a trivial FastAPI route served the same way, and
measures every route, the floor first, in the same run: --single-requests requests from one
client (no contention: what one request costs) and --requests requests from --clients
concurrent clients (aiohttp, one asyncio loop), each request to a random study / trial.
Prints the machine's core count and load average first (client, server and PostgreSQL share
the machine, so other work on it shows in every figure), then per route the single-client
p50/p95, the concurrent p50/p95/p99 and throughput, and each as a multiple of the floor's.

    .venv/bin/python bench/api_latency.py [--requests 1000] [--clients 50] [--workers 1]

Target (issue #7): p95 of the list and detail routes under 50 ms at 50 concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp
import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.store import Store  # noqa: E402
from manager.api.settings import DATABASE_URL_ENV  # noqa: E402
from tests.pg import PostgresCluster, free_port  # noqa: E402

FLOOR_APP = textwrap.dedent("""
    from fastapi import FastAPI
    app = FastAPI()

    @app.get("/floor")
    def floor() -> dict[str, bool]:
        return {"ok": True}
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a "
                        "throwaway cluster)")
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--trials-per-study", type=int, default=1000)
    parser.add_argument("--levels", type=int, default=10, help="benchmark runs per trial "
                        "(2 scenarios × levels/2 concurrency levels)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per route")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--single-requests", type=int, default=200,
                        help="requests per route from one client")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes for the API and for the floor alike "
                        "(1: `servetune serve`; more: uvicorn --factory app_from_env)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {_load()} at start")
    with ExitStack() as stack:
        url = args.database_url
        if url is None:
            url = stack.enter_context(PostgresCluster()).create_database("bench")
        Store.open(url).close()  # create the schema through the migrations
        started = time.perf_counter()
        fill(url, args.studies, args.trials_per_study, args.levels)
        print(f"filled {args.studies * args.trials_per_study:,} trials and "
              f"{args.studies * args.trials_per_study * args.levels:,} benchmark runs in "
              f"{time.perf_counter() - started:.1f} s")
        api = stack.enter_context(serve_api(url, args.workers))
        floor = stack.enter_context(serve_floor(args.workers))
        rng = random.Random(0)
        study = lambda: f"bench-{rng.randrange(args.studies):03d}"  # noqa: E731
        number = lambda: rng.randrange(args.trials_per_study)  # noqa: E731
        routes: list[tuple[str, str, Callable[[], str]]] = [
            ("floor: trivial FastAPI route", floor, lambda: "/floor"),
            ("GET /healthz", api, lambda: "/healthz"),
            ("list studies (limit 50)", api, lambda: "/api/v1/studies?limit=50"),
            ("one study", api, lambda: f"/api/v1/studies/{study()}"),
            ("list trials (by number, 50)", api,
             lambda: f"/api/v1/studies/{study()}/trials?limit=50&offset={number() // 2}"),
            ("list trials (by score desc)", api,
             lambda: f"/api/v1/studies/{study()}/trials?sort=score&order=desc&limit=50"),
            ("list trials (by ttft_ms_p95)", api,
             lambda: f"/api/v1/studies/{study()}/trials?sort=ttft_ms_p95&limit=50"),
            ("one trial (10 levels)", api,
             lambda: f"/api/v1/studies/{study()}/trials/{number()}"),
            ("best config", api, lambda: f"/api/v1/studies/{study()}/best"),
            ("progress (ETag)", api, lambda: f"/api/v1/studies/{study()}/progress"),
            ("plots (report data)", api, lambda: f"/api/v1/studies/{study()}/plots"),
        ]
        print(f"\nper route: {args.single_requests} requests from 1 client, then "
              f"{args.requests} from {args.clients} concurrent clients; {os.cpu_count()} CPUs "
              "shared by client, server and PostgreSQL; latencies in ms\n")
        print(f"{'':<32} {'1 client':>17} {f'{args.clients} clients':>33}")
        print(f"{'route':<32} {'p50':>6} {'p95':>6} {'xfloor':>6} {'p50':>6} {'p95':>6} "
              f"{'p99':>6} {'req/s':>6} {'xfloor':>6}")
        floor: tuple[float, float] | None = None
        for label, base, path in routes:
            single, _, single_errors = asyncio.run(load(base, path, args.single_requests, 1))
            latencies, wall_s, errors = asyncio.run(
                load(base, path, args.requests, args.clients))
            s50, s95 = (percentile(single, q) for q in (50, 95))
            p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
            floor = floor or (s50, p95)
            failed = single_errors + errors
            note = f" ({failed} errors)" if failed else ""
            print(f"{label:<32} {s50:>6.1f} {s95:>6.1f} {s50 / floor[0]:>5.1f}x "
                  f"{p50:>6.0f} {p95:>6.0f} {p99:>6.0f} {len(latencies) / wall_s:>6.0f} "
                  f"{p95 / floor[1]:>5.1f}x{note}", flush=True)
    print(f"\nload average {_load()} at the end")
    return 0


def _load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def fill(url: str, studies: int, trials_per_study: int, levels: int) -> None:
    """Studies, trials and runs generated inside PostgreSQL (each study's trials together,
    as a study run after another leaves them, and each trial's runs together), then VACUUM
    ANALYZE."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    concurrencies = max(levels // 2, 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO studies (name, config, status, created_at, finished_at)
            SELECT format('bench-%%s', lpad(s::text, 3, '0')),
                   jsonb_build_object(
                       'name', format('bench-%%s', lpad(s::text, 3, '0')),
                       'model', jsonb_build_object('name', 'meta-llama/Llama-3.1-8B-Instruct'),
                       'engine', jsonb_build_object('name', 'vllm', 'simulated', false),
                       'search_space', jsonb_build_object(
                           'tensor-parallel-size', jsonb_build_array(1, 2, 4, 8),
                           'max-num-seqs', jsonb_build_array(32, 64, 128, 256)),
                       'search', jsonb_build_object('algorithm', 'tpe', 'max_trials', %(t)s),
                       'objective', jsonb_build_object('metric', 'output_throughput')),
                   CASE WHEN s %% 20 = 0 THEN 'running' ELSE 'succeeded' END,
                   now() - make_interval(hours => s), now() - make_interval(hours => s - 1)
            FROM generate_series(0, %(s)s - 1) AS s""", {"s": studies, "t": trials_per_study})
        conn.execute("""
            INSERT INTO trials (study_id, number, attempt, trial_id, params, argv, gpu_ids,
                                node, status, reason, message, score, objective_value,
                                phase_timings, started_at, finished_at, log_excerpt)
            SELECT st.id, n, 0, format('t%%s', n),
                   jsonb_build_object('tensor-parallel-size', 1 << (n %% 4),
                                      'max-num-seqs', 32 << ((n / 4) %% 4)),
                   jsonb_build_array('vllm', 'serve', 'meta-llama/Llama-3.1-8B-Instruct',
                                     '--tensor-parallel-size', ((1 << (n %% 4)))::text,
                                     '--max-num-seqs', (32 << ((n / 4) %% 4))::text),
                   jsonb_build_array('0'), 'node-1',
                   CASE WHEN n %% 10 = 3 THEN 'failed' ELSE 'succeeded' END,
                   CASE WHEN n %% 10 = 3 THEN 'slo_violated' END, '',
                   CASE WHEN n %% 10 = 3 THEN -1.2 ELSE 1000 + random() * 3000 END,
                   CASE WHEN n %% 10 = 3 THEN NULL ELSE 1000 + random() * 3000 END,
                   '{"startup_s": 30.0, "benchmark_s": 120.0}'::jsonb,
                   st.created_at + make_interval(secs => n * 60),
                   st.created_at + make_interval(secs => n * 60 + 150), ''
            FROM studies st, generate_series(0, %(t)s - 1) AS n
            ORDER BY st.id, n""", {"t": trials_per_study})
        conn.execute("""
            INSERT INTO benchmark_runs (trial_row_id, scenario, concurrency, num_completed,
                num_errors, error_rate, duration_s,
                ttft_ms_mean, ttft_ms_p50, ttft_ms_p90, ttft_ms_p95, ttft_ms_p99, ttft_ms_min,
                ttft_ms_max, tpot_ms_mean, tpot_ms_p50, tpot_ms_p90, tpot_ms_p95, tpot_ms_p99,
                tpot_ms_min, tpot_ms_max, e2e_latency_ms_mean, e2e_latency_ms_p50,
                e2e_latency_ms_p90, e2e_latency_ms_p95, e2e_latency_ms_p99, e2e_latency_ms_min,
                e2e_latency_ms_max, input_tokens_per_s, output_tokens_per_s,
                total_tokens_per_s, requests_per_s, mean_input_tokens, mean_output_tokens)
            SELECT t.id, sc.name, 1 << c, 64, 0, 0.0, 60.0,
                   r * 40, r * 38, r * 60, r * 70, r * 90, r * 10, r * 120,
                   r * 8, r * 7, r * 10, r * 11, r * 14, r * 5, r * 20,
                   r * 900, r * 850, r * 1200, r * 1300, r * 1600, r * 300, r * 2000,
                   2000 * r, 1000 * r * (1 << c), 3000 * r, 4 * r, 1024, 256
            FROM trials t
            CROSS JOIN (VALUES ('D(1024,256)'), ('D(128,2048)')) AS sc(name)
            CROSS JOIN generate_series(0, %(c)s - 1) AS c
            CROSS JOIN LATERAL (SELECT 0.5 + random() + t.id * 0 AS r) AS rnd
            -- a trial's runs together, as the store writes them (one transaction a trial);
            -- unordered, they land on one page per concurrency level
            ORDER BY t.id, sc.name, c""",
                     {"c": concurrencies})
        conn.execute("""
            UPDATE studies SET best_trial_number = best.number FROM (
                SELECT DISTINCT ON (study_id) study_id, number FROM trials
                WHERE status = 'succeeded' ORDER BY study_id, score DESC) AS best
            WHERE studies.id = best.study_id AND studies.status <> 'running'""")
        conn.execute("VACUUM ANALYZE")


@contextmanager
def serve_api(url: str, workers: int = 1) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVETUNE_API_")}
    if workers == 1:
        argv = [sys.executable, "-m", "manager.cli", "serve", "--database-url", url,
                "--port", str(port)]
    else:  # as docs/api.md runs several: the app factory, settings from the environment
        env[DATABASE_URL_ENV] = url
        argv = [sys.executable, "-m", "uvicorn", "--factory", "manager.api.app:app_from_env",
                "--workers", str(workers), "--port", str(port), "--log-level", "warning"]
    with _process(argv, env) as _:
        yield _wait_healthy(f"http://127.0.0.1:{port}", "/healthz")


@contextmanager
def serve_floor(workers: int = 1) -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "floor_app.py").write_text(FLOOR_APP)
        env = dict(os.environ, PYTHONPATH=tmp)
        with _process([sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(port),
                       "--workers", str(workers), "--log-level", "warning"], env) as _:
            yield _wait_healthy(f"http://127.0.0.1:{port}", "/floor")


@contextmanager
def _process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(base: str, path: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + path, timeout=1.0).status_code == 200:
                return base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base}{path} not healthy in {timeout_s} s")


async def load(base: str, path: Callable[[], str], requests: int, clients: int
               ) -> tuple[list[float], float, int]:
    """Latencies (ms) of ``requests`` GETs from ``clients`` concurrent clients, the wall
    time, and how many answered other than 200. A few warm-up requests come first."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        for _ in range(5):
            async with session.get(path()) as response:
                await response.read()

        async def client() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.get(path()) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - started, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


if __name__ == "__main__":
    sys.exit(main())
