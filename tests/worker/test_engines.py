"""Engines: argv per engine, the registry, and reading failures from real engines' logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.results import FailureReason
from tests.conftest import REPO, free_port
from worker.engines import ENGINE_NAMES, Engine, get_engine
from worker.engines.base import SUMMARY_MAX_CHARS
from worker.engines.sim import SimulatedEngine
from worker.engines.trtllm import TrtllmEngine

INFEASIBLE = FailureReason.INFEASIBLE_CONFIG
INFRA = FailureReason.INFRA_ERROR
CRASH = FailureReason.ENGINE_CRASH
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


# -- argv ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("engine", "flags", "expected"), [
    (get_engine("vllm"), ["-tp", "2", "--max-num-seqs=128"],
     ["vllm", "serve", MODEL, "--host", "127.0.0.1", "--port", "8123",
      "--served-model-name", "llama", "-tp", "2", "--max-num-seqs=128"]),
    (get_engine("sglang"), ["--tp-size", "2"],
     [sys.executable, "-m", "sglang.launch_server", "--model-path", MODEL,
      "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "llama",
      "--tp-size", "2"]),
    (get_engine("trtllm", served_model_name_flag=True), ["--tp_size", "2"],
     ["trtllm-serve", MODEL, "--host", "127.0.0.1", "--port", "8123",
      "--served_model_name", "llama", "--tp_size", "2"]),
    (get_engine("sim"), ["-tp", "2"],
     [sys.executable, "-m", "worker.sim", "serve", "--engine", "vllm", MODEL,
      "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "llama", "-tp", "2"]),
    (get_engine("sim", dialect="sglang"), ["--tp-size", "2"],
     [sys.executable, "-m", "worker.sim", "serve", "--engine", "sglang", "--model-path", MODEL,
      "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "llama",
      "--tp-size", "2"]),
])
def test_command_is_an_argv_list_with_each_flag_and_value_a_separate_item(
        engine: Engine, flags: list[str], expected: list[str]) -> None:
    argv = engine.command(MODEL, flags, "127.0.0.1", 8123, "llama")
    assert argv == expected
    assert all(isinstance(item, str) for item in argv)


def test_trtllm_without_the_flag_serves_under_the_model_name_only(tmp_path: Path) -> None:
    engine = get_engine("trtllm")
    assert engine.command(MODEL, ["--tp_size", "1"], "127.0.0.1", 9, MODEL) == [
        "trtllm-serve", MODEL, "--host", "127.0.0.1", "--port", "9", "--tp_size", "1"]
    with pytest.raises(ConfigError, match="served_model_name") as info:
        engine.command(MODEL, [], "127.0.0.1", 9, "llama")
    assert info.value.allowed == (MODEL,)
    # A local checkpoint directory is advertised by its last path component.
    checkpoint = tmp_path / "llama-8b"
    checkpoint.mkdir()
    assert TrtllmEngine.advertised_model_name(str(checkpoint)) == "llama-8b"


@pytest.mark.parametrize("flag", ["--port", "--port=9000", "--host", "--served-model-name"])
def test_flags_cannot_override_what_the_launcher_owns(flag: str) -> None:
    with pytest.raises(ConfigError, match="set by servetune"):
        get_engine("vllm").command(MODEL, [flag, "x"], "127.0.0.1", 8000, "llama")


def test_gpu_env_lists_the_host_gpu_ids_in_order() -> None:
    for name in ENGINE_NAMES:
        assert get_engine(name).gpu_env(["3", "5"]) == {"CUDA_VISIBLE_DEVICES": "3,5"}


def test_every_engine_satisfies_the_protocol_and_probes_health() -> None:
    for name in ENGINE_NAMES:
        engine = get_engine(name)
        assert isinstance(engine, Engine)
        assert engine.name == name
        assert engine.health_path == "/health"


# -- registry --------------------------------------------------------------------------------

def test_registry_miss_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_engine("tgi")
    for name in ("vllm", "sglang", "trtllm", "sim"):
        assert name in str(info.value)
    assert info.value.allowed == ENGINE_NAMES
    assert info.value.value == "tgi"


def test_registry_rejects_an_option_the_engine_does_not_take() -> None:
    with pytest.raises(ConfigError, match="dialect"):
        get_engine("vllm", dialect="sglang")


def test_sim_dialect_must_be_vllm_or_sglang() -> None:
    with pytest.raises(ConfigError, match="dialect") as info:
        get_engine("sim", dialect="trtllm")
    assert info.value.allowed == ("vllm", "sglang")
    assert SimulatedEngine("sglang") == get_engine("sim", dialect="sglang")


# -- failure classification on the real engines' messages ------------------------------------

VLLM_OOM = """\
INFO 07-10 12:00:01 [gpu_model_runner.py:1595] Starting to load model meta-llama/Llama-3.1-70B...
ERROR 07-10 12:00:09 [core.py:586] EngineCore failed to start.
ERROR 07-10 12:00:09 [core.py:586] Traceback (most recent call last):
ERROR 07-10 12:00:09 [core.py:586]   File "/usr/lib/python3/vllm/v1/engine/core.py", line 577
ERROR 07-10 12:00:09 [core.py:586] torch.OutOfMemoryError: CUDA out of memory. Tried to \
allocate 896.00 MiB. GPU 0 has a total capacity of 79.19 GiB of which 512.00 MiB is free.
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""
VLLM_CACHE_BLOCKS = """\
INFO 07-10 12:00:30 [worker.py:294] model weights take 65.71GiB; PyTorch activation peak memory
ERROR 07-10 12:00:31 [core.py:586] ValueError: No available memory for the cache blocks. Try \
increasing `gpu_memory_utilization` when initializing the engine.
"""
VLLM_KV_TOO_SMALL = """\
ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV \
cache is needed, which is larger than the available KV cache memory (9.47 GiB). Based on the \
available memory, the estimated maximum model length is 77520. Try increasing \
`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.
"""
SGLANG_MEM_FRACTION = """\
[2025-07-10 12:00:00 TP0] Load weight end. type=LlamaForCausalLM, dtype=torch.bfloat16
[2025-07-10 12:00:01 TP0] Scheduler hit an exception: Traceback (most recent call last):
  File "/sgl-workspace/sglang/python/sglang/srt/model_executor/model_runner.py", line 715
RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. Current value: \
mem_fraction_static=0.4
"""
SGLANG_CUDA_GRAPH = """\
[2025-07-10 12:00:05 TP0] Capture cuda graph begin. This can take up to several minutes.
Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0
Possible solutions:
1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)
2. set --cuda-graph-max-bs to a smaller value (e.g., 16)
"""
ARGPARSE = """\
usage: vllm serve [model_tag] [options]
vllm serve: error: argument --max-num-seqs: invalid int value: 'many'
"""
CLICK = """\
Usage: trtllm-serve serve [OPTIONS] MODEL
Try 'trtllm-serve serve --help' for help.

Error: No such option: --max_num_seq (Possible options: --max_num_tokens, --max_seq_len)
"""
TRTLLM_OOM = """\
[TensorRT-LLM][ERROR] CUDA runtime error in ::cudaMallocAsync(ptr, n, mCudaStream->get()): out \
of memory (/app/tensorrt_llm/cpp/tensorrt_llm/runtime/tllmBuffers.h:112)
"""
VLLM_GPU_MISMATCH = """\
INFO 07-10 12:00:00 [ray_utils.py:334] No current placement group found.
ValueError: The number of required GPUs exceeds the total number of available GPUs in the \
placement group.
"""
VLLM_MP_GPU_MISMATCH = """\
RuntimeError: please ensure that world_size (2) is less than than max local gpu count (1)
"""
TRTLLM_GPU_MISMATCH = "RuntimeError: Only 8 GPUs are available, but 16 are required.\n"
SIM_GPU_MISMATCH = (
    "ERROR [servetune-sim] RuntimeError: the launch needs tp × pp × dp = 2 × 1 × 1 = 2 GPUs but "
    "CUDA_VISIBLE_DEVICES='0' makes 1 visible. The number of required GPUs exceeds the total "
    "number of available GPUs.\n")
NO_DRIVER = ('docker: Error response from daemon: could not select device driver "" with '
             "capabilities: [[gpu]].\n")
GENERIC_TRACEBACK = """\
INFO 07-10 12:00:00 [api_server.py:1043] vLLM API server version 0.9.2
Traceback (most recent call last):
  File "/usr/lib/python3/vllm/model_executor/models/llama.py", line 120, in __init__
    scaling = config.rope_scaling["factor"]
KeyError: 'factor'
"""
NCCL = """\
torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system \
error, NCCL version 2.21.5
"""


@pytest.mark.parametrize(("engine", "log", "reason", "summary_start"), [
    ("vllm", VLLM_OOM, INFEASIBLE, "torch.OutOfMemoryError: CUDA out of memory. Tried"),
    ("vllm", VLLM_CACHE_BLOCKS, INFEASIBLE, "ValueError: No available memory for the cache"),
    ("vllm", VLLM_KV_TOO_SMALL, INFEASIBLE, "ValueError: To serve at least one request"),
    ("sglang", SGLANG_MEM_FRACTION, INFEASIBLE, "RuntimeError: Not enough memory."),
    ("sglang", SGLANG_CUDA_GRAPH, INFEASIBLE, "Exception: Capture cuda graph failed"),
    ("vllm", ARGPARSE, INFEASIBLE, "vllm serve: error: argument --max-num-seqs"),
    ("trtllm", CLICK, INFEASIBLE, "Error: No such option: --max_num_seq"),
    ("trtllm", TRTLLM_OOM, INFEASIBLE, "[TensorRT-LLM][ERROR] CUDA runtime error"),
    ("vllm", VLLM_GPU_MISMATCH, INFRA, "ValueError: The number of required GPUs exceeds"),
    ("vllm", VLLM_MP_GPU_MISMATCH, INFRA, "RuntimeError: please ensure that world_size (2)"),
    ("trtllm", TRTLLM_GPU_MISMATCH, INFRA, "RuntimeError: Only 8 GPUs are available"),
    ("sim", SIM_GPU_MISMATCH, INFRA, "RuntimeError: the launch needs tp × pp × dp"),
    ("sglang", NO_DRIVER, INFRA, "docker: Error response from daemon: could not select"),
    ("vllm", GENERIC_TRACEBACK, CRASH, "engine exited with code 1: KeyError: 'factor'"),
    ("sglang", NCCL, CRASH, "engine exited with code 1: torch.distributed.DistBackendError"),
])
def test_classify_failure_reads_the_engines_own_messages(
        engine: str, log: str, reason: FailureReason, summary_start: str) -> None:
    got_reason, summary = get_engine(engine).classify_failure(1, log)
    assert got_reason is reason
    assert summary.startswith(summary_start)
    assert "\n" not in summary and len(summary) <= SUMMARY_MAX_CHARS


def test_a_setup_error_wins_over_the_errors_it_causes_further_down() -> None:
    log = "RuntimeError: CUDA error: invalid device ordinal\n" + VLLM_OOM
    assert get_engine("sglang").classify_failure(1, log)[0] is INFRA


def test_a_signal_or_a_silent_exit_is_a_crash_with_a_readable_summary() -> None:
    reason, summary = get_engine("vllm").classify_failure(-9, "INFO loading weights\n")
    assert reason is CRASH
    assert "SIGKILL" in summary and "loading weights" in summary
    reason, summary = get_engine("sim").classify_failure(1, "")
    assert (reason, summary) == (CRASH, "engine exited with code 1 without any log output")


def test_the_summary_is_one_clipped_line_however_long_the_message() -> None:
    log = "torch.OutOfMemoryError: CUDA out of memory. " + "x" * 2000
    _, summary = get_engine("vllm").classify_failure(1, log)
    assert len(summary) == SUMMARY_MAX_CHARS and summary.endswith("…")


# -- the simulated engine's real output -------------------------------------------------------

LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"


@pytest.mark.integration
@pytest.mark.parametrize(("args", "gpus", "reason", "needle"), [
    (["--engine", "vllm", LLAMA_70B], 1, INFEASIBLE, "OutOfMemoryError"),
    (["--engine", "vllm", LLAMA_70B, "-tp", "2", "--gpu-memory-utilization", "0.5"], 2,
     INFEASIBLE, "No available memory for the cache blocks"),
    (["--engine", "sglang", "--model-path", LLAMA_70B, "--tp-size", "2",
      "--mem-fraction-static", "0.4"], 2, INFEASIBLE, "Not enough memory"),
    (["--engine", "sglang", "--model-path", LLAMA_70B, "--tp-size", "2",
      "--mem-fraction-static", "0.99"], 2, INFEASIBLE, "Capture cuda graph failed"),
    (["--engine", "vllm", MODEL, "--max-num-seqs", "many"], 1, INFEASIBLE,
     "error: argument --max-num-seqs"),
    (["--engine", "vllm", MODEL, "--max-num-seqs", "4096", "--max-num-batched-tokens", "2048"],
     1, INFEASIBLE, "must be greater than or equal to --max-num-seqs"),
    (["--engine", "vllm", MODEL, "-tp", "2"], 1, INFRA, "exceeds the total number"),
    (["--engine", "vllm", MODEL], 2, INFRA, "Give the engine exactly the GPUs"),
])
def test_classify_failure_on_the_simulated_engines_real_output(
        args: list[str], gpus: int, reason: FailureReason, needle: str) -> None:
    """The simulator's startup failures, run for real, classify like the real engine's."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(gpus)))
    result = subprocess.run(
        [sys.executable, "-m", "worker.sim", "serve", *args, "--port", str(free_port()),
         "--sim-startup-scale", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode in (1, 2), result.stderr
    dialect = args[1]
    got_reason, summary = get_engine("sim", dialect=dialect).classify_failure(
        result.returncode, result.stdout + result.stderr)
    assert got_reason is reason, summary
    assert needle in summary


def test_launcher_command_replaces_only_the_executable() -> None:
    """launcher.command swaps the program part of the argv; the model and flags stay."""
    from worker.engines import get_engine
    from worker.trial import executable_length

    for name, prefix in (("vllm", 2), ("sglang", 3), ("trtllm", 1)):
        argv = get_engine(name).command("org/model", ["--x", "1"], "127.0.0.1", 8000,
                                        "org/model")
        assert executable_length(argv, "org/model") == prefix, argv


def test_the_interpreter_is_an_engine_option() -> None:
    """`python -m` engines run on the interpreter given (an image's python3 in a container);
    engines started by their own executable accept the option and keep their argv."""
    from worker.engines import get_engine

    for name, options in (("sglang", {}), ("sim", {"dialect": "sglang"})):
        default = get_engine(name, **options).command("m", [], "h", 1, "m")
        image = get_engine(name, python="python3", **options).command("m", [], "h", 1, "m")
        assert default[0] == sys.executable and image[0] == "python3"
        assert default[1:] == image[1:]
    assert get_engine("vllm", python="python3").command("m", [], "h", 1, "m")[:2] == [
        "vllm", "serve"]
