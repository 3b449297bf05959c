"""Benchmark results: one ``LevelMetrics`` per (traffic scenario, concurrency level).

Both benchmark runners produce this type: the genai-bench adapter (parsed from its result
JSON) and the simulator's virtual-time predictor (computed from simulated request records with
``summarize``, using genai-bench's definitions), so scoring never knows which one ran.

Definitions (genai-bench 0.0.5): TTFT = first token − request start; e2e = last token −
request start; TPOT = (e2e − TTFT) / (output tokens − 1); requests/s = completed requests /
run duration; token throughputs = requests/s × mean tokens per request (genai-bench divides
windowed token sums by the whole run's duration, which under-reports when a warm-up window is
set; this form is the same without a window and unbiased with one).
Latencies are in milliseconds here (genai-bench reports seconds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Stats:
    """Summary of one latency metric over the completed requests of a level."""

    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            nan = math.nan
            return cls(nan, nan, nan, nan, nan, nan, nan)
        ordered = sorted(values)
        return cls(
            mean=sum(ordered) / len(ordered),
            p50=percentile(ordered, 50), p90=percentile(ordered, 90),
            p95=percentile(ordered, 95), p99=percentile(ordered, 99),
            min=ordered[0], max=ordered[-1],
        )


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it (seconds on one clock)."""

    start_s: float
    first_token_s: float
    end_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LevelMetrics:
    """Aggregate metrics of one benchmark run: one scenario at one concurrency level."""

    scenario: str
    concurrency: int
    num_completed: int
    num_errors: int
    duration_s: float
    ttft_ms: Stats
    tpot_ms: Stats
    e2e_latency_ms: Stats
    input_tokens_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    requests_per_s: float
    mean_input_tokens: float
    mean_output_tokens: float

    @property
    def num_requests(self) -> int:
        return self.num_completed + self.num_errors

    @property
    def error_rate(self) -> float:
        """Errors over all requests sent (computed from counts, never taken from a tool)."""
        return self.num_errors / self.num_requests if self.num_requests else 0.0

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["error_rate"] = self.error_rate
        return data


def summarize(scenario: str, concurrency: int, records: Sequence[RequestRecord],
              num_errors: int = 0, warmup: int = 0) -> LevelMetrics:
    """Aggregate request records (in completion order) the way genai-bench does.

    Latency statistics and mean token counts leave out the first ``warmup`` completions;
    rates count every completed request over the whole run (first start to last end), so a
    warm-up window does not bias throughput (genai-bench's own token rates are biased by it).
    """
    if records:
        start = min(r.start_s for r in records)
        end = max(r.end_s for r in records)
        duration = max(end - start, 1e-9)
    else:
        duration = 0.0
    window = records[warmup:] if warmup < len(records) else records
    ttft = [(r.first_token_s - r.start_s) * 1e3 for r in window]
    e2e = [(r.end_s - r.start_s) * 1e3 for r in window]
    tpot = [(r.end_s - r.first_token_s) * 1e3 / (r.output_tokens - 1)
            for r in window if r.output_tokens > 1]
    n = len(records)
    mean_in = sum(r.input_tokens for r in window) / len(window) if window else 0.0
    mean_out = sum(r.output_tokens for r in window) / len(window) if window else 0.0
    rps = n / duration if duration else 0.0
    return LevelMetrics(
        scenario=scenario, concurrency=concurrency, num_completed=n, num_errors=num_errors,
        duration_s=duration, ttft_ms=Stats.of(ttft), tpot_ms=Stats.of(tpot),
        e2e_latency_ms=Stats.of(e2e),
        input_tokens_per_s=rps * mean_in, output_tokens_per_s=rps * mean_out,
        total_tokens_per_s=rps * (mean_in + mean_out), requests_per_s=rps,
        mean_input_tokens=mean_in, mean_output_tokens=mean_out,
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile of sorted values (numpy's default method)."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    weight = position - low
    return ordered[low] * (1 - weight) + ordered[high] * weight
