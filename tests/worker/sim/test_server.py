"""The simulated engine as a real process: OpenAI API, lifecycle, metrics and fault switches."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoTokenizer

from tests.conftest import REPO
from worker.sim.tokens import DEFAULT_TOKENIZER_DIR

pytestmark = pytest.mark.integration

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
VLLM_8B = ["--engine", "vllm", LLAMA_8B]
SGLANG_8B = ["--engine", "sglang", "--model-path", LLAMA_8B, "--served-model-name", "llama"]


@pytest.fixture(scope="module")
def hf_tokenizer():  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(str(DEFAULT_TOKENIZER_DIR))


def stream_events(client: httpx.Client, url: str, body: dict) -> list[dict]:  # type: ignore[type-arg]
    events = []
    with client.stream("POST", url, json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[len("data: "):]
            if payload == "[DONE]":
                events.append({"done": True})
            else:
                events.append(json.loads(payload))
    return events


def test_streamed_completion_tokenizes_to_exactly_the_reported_count(sim_server, hf_tokenizer):
    """Streaming /v1/completions: one chunk per token, a final usage chunk with exact counts,
    and the emitted text re-tokenizes (benchmark tokenizer) to completion_tokens."""
    prompt = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate"
    with sim_server(VLLM_8B) as sim, httpx.Client() as client:
        sim.wait_ready()
        events = stream_events(client, sim.url + "/v1/completions", {
            "model": LLAMA_8B, "prompt": prompt, "max_tokens": 37, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] == {"done": True}
    usage = events[-2]["usage"]
    assert events[-2]["choices"] == []
    text_chunks = [e["choices"][0]["text"] for e in events[:-2] if e["choices"][0]["text"]]
    assert len(text_chunks) == 37
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    assert usage == {"prompt_tokens": len(hf_tokenizer(prompt).input_ids),
                     "completion_tokens": 37, "total_tokens": usage["prompt_tokens"] + 37}
    assert len(hf_tokenizer("".join(text_chunks)).input_ids) == 37


def test_chat_completion_counts_the_chat_template(sim_server, hf_tokenizer):
    """Non-streaming chat: prompt_tokens = the chat template's token count; text re-tokenizes
    to completion_tokens; without ignore_eos the reply may stop early (finish_reason stop)."""
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a sonnet about time."}]
    with sim_server(SGLANG_8B) as sim, httpx.Client() as client:
        sim.wait_ready()
        body = client.post(sim.url + "/v1/chat/completions", json={
            "model": "llama", "messages": messages, "max_tokens": 64, "ignore_eos": True},
            timeout=30).json()
        models = client.get(sim.url + "/v1/models").json()
        natural = [client.post(sim.url + "/v1/chat/completions", json={
            "messages": messages, "max_tokens": 3000}, timeout=60).json() for _ in range(3)]
    expected_prompt = len(hf_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    assert body["usage"]["prompt_tokens"] == expected_prompt
    assert body["usage"]["completion_tokens"] == 64
    content = body["choices"][0]["message"]["content"]
    assert len(hf_tokenizer(content).input_ids) == 64
    assert models["data"][0]["id"] == "llama"
    for reply in natural:
        tokens = reply["usage"]["completion_tokens"]
        assert 1 <= tokens <= 3000
        assert reply["choices"][0]["finish_reason"] == ("stop" if tokens < 3000 else "length")


def test_health_is_503_while_loading_then_200(sim_server):
    """The port opens at once; /health answers 503 during the simulated startup."""
    with sim_server(VLLM_8B + ["--sim-slow-startup-s", "1.5"]) as sim:
        deadline = time.monotonic() + 10
        codes = []
        while time.monotonic() < deadline:
            try:
                code = httpx.get(sim.url + "/health", timeout=1).status_code
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            codes.append(code)
            if code == 200:
                break
            time.sleep(0.1)
        assert 503 in codes and codes[-1] == 200
        assert httpx.post(sim.url + "/v1/completions",
                          json={"prompt": "x", "max_tokens": 1}).status_code == 200


def test_metrics_and_cache_reset_endpoints(sim_server):
    """/metrics is Prometheus text with the engine's names; cache resets answer 200."""
    with sim_server(VLLM_8B) as sim, httpx.Client() as client:
        sim.wait_ready()
        prompt = "the " * 300
        for _ in range(2):
            client.post(sim.url + "/v1/completions",
                        json={"prompt": prompt, "max_tokens": 4, "ignore_eos": True})
        families = {f.name: f for f in text_string_to_metric_families(
            client.get(sim.url + "/metrics").text)}
        assert client.post(sim.url + "/reset_prefix_cache").status_code == 200
        assert client.post(sim.url + "/flush_cache").status_code == 200
    assert families["vllm:generation_tokens"].samples[0].value == 8
    assert families["vllm:num_requests_running"].samples[0].value == 0
    # The second identical prompt was served from the prefix cache.
    assert families["vllm:prefix_cache_hits"].samples[0].value >= 256


def test_bad_requests_get_openai_style_errors(sim_server):
    """Wrong model → 404; bad JSON, bad max_tokens or too long a prompt → 400; never 500."""
    with sim_server(VLLM_8B + ["--max-model-len", "64"]) as sim, httpx.Client() as client:
        sim.wait_ready()
        url = sim.url + "/v1/completions"
        assert client.post(url, json={"model": "other", "prompt": "x"}).status_code == 404
        assert client.post(url, content=b"{not json").status_code == 400
        assert client.post(url, json={"prompt": "x", "max_tokens": -1}).status_code == 400
        long = client.post(url, json={"prompt": "word " * 100, "max_tokens": 8})
        assert long.status_code == 400 and "maximum context length" in long.json()["message"]
        # The client's max_tokens is checked even when the reply would stop earlier.
        limit = client.post(url, json={"prompt": "word", "max_tokens": 100})
        assert limit.status_code == 400


def run_engine(args: list[str], gpus: str | None = "0",
               timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return subprocess.run([sys.executable, "-m", "worker.sim", *args, "--port", "0",
                           "--sim-startup-scale", "0.01"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,gpus,needle", [
    (["--engine", "vllm", "meta-llama/Llama-3.1-70B-Instruct"], "0", "CUDA out of memory"),
    (["--engine", "vllm", "meta-llama/Llama-3.1-70B-Instruct", "-tp", "2"], "0,1",
     "max seq len"),
    (["--engine", "sglang", "--model-path", LLAMA_8B, "--mem-fraction-static", "0.995"], "0",
     "Capture cuda graph failed"),
    (VLLM_8B + ["-tp", "2"], "0", "exceeds the total number of available GPUs"),
    (VLLM_8B, "0,1,2,3", "exactly the GPUs"),
    (["--engine", "vllm", "no-such/model"], "0", "unknown model"),
])
def test_failing_configs_exit_nonzero_within_seconds(args, gpus, needle):
    """Configs a real engine cannot start exit 1 fast, with the engine's message in the log."""
    started = time.monotonic()
    result = run_engine(args, gpus)
    assert result.returncode == 1, result.stdout + result.stderr
    assert needle in result.stderr
    assert time.monotonic() - started < 10


def test_unknown_flags_warn_once_and_bad_values_exit_2():
    """Unknown real-engine flags: one warning line; a known flag with a bad value: exit 2."""
    bad = run_engine(VLLM_8B + ["--max-num-seqs", "lots"])
    assert bad.returncode == 2 and "--max-num-seqs" in bad.stderr
    warn = run_engine(["--engine", "vllm", "meta-llama/Llama-3.1-70B-Instruct",
                       "--enforce-eager", "--swap-space", "4"])
    warnings = [line for line in warn.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "--enforce-eager --swap-space 4" in warnings[0]


def test_fault_crash_after_n_requests(sim_server):
    """--sim-crash-after-requests N: request N+1 kills the engine with a CUDA error."""
    with sim_server(VLLM_8B + ["--sim-crash-after-requests", "2"]) as sim:
        sim.wait_ready()
        for _ in range(2):
            assert httpx.post(sim.url + "/v1/completions",
                              json={"prompt": "x", "max_tokens": 2}).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.post(sim.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert sim.proc.wait(timeout=5) == 1
        assert "illegal memory access" in sim.log_text()


def test_fault_oom_above_running_requests(sim_server):
    """--sim-oom-above-running C: more than C running requests → CUDA OOM, exit 1."""
    with sim_server(VLLM_8B + ["--sim-oom-above-running", "3"]) as sim:
        sim.wait_ready()

        def call() -> int | str:
            try:
                return httpx.post(sim.url + "/v1/completions", timeout=20, json={
                    "prompt": "x", "max_tokens": 200, "ignore_eos": True}).status_code
            except httpx.TransportError as e:
                return type(e).__name__

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: call(), range(6)))
        assert sim.proc.wait(timeout=5) == 1
        assert "CUDA out of memory" in sim.log_text()
        assert any(r != 200 for r in results)


def test_fault_hangs(sim_server):
    """--sim-hang-at-startup keeps /health at 503; --sim-hang-completions accepts requests
    that never produce a token while /health stays 200."""
    with sim_server(VLLM_8B + ["--sim-hang-at-startup"]) as sim:
        time.sleep(1.0)
        assert httpx.get(sim.url + "/health").status_code == 503
        assert sim.proc.poll() is None
    with sim_server(VLLM_8B + ["--sim-hang-completions"]) as sim:
        sim.wait_ready()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(sim.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2},
                       timeout=1.0)
        assert httpx.get(sim.url + "/health").status_code == 200


def test_fault_http_errors_at_a_rate(sim_server):
    """--sim-http-error-rate R with status S: about R of the requests get S."""
    with sim_server(VLLM_8B + ["--sim-http-error-rate", "0.5", "--sim-http-error-status",
                               "429"]) as sim, httpx.Client() as client:
        sim.wait_ready()
        codes = [client.post(sim.url + "/v1/completions",
                             json={"prompt": "x", "max_tokens": 1}).status_code
                 for _ in range(60)]
    assert set(codes) == {200, 429}
    assert 15 <= codes.count(429) <= 45
