"""Parse a real engine's command line into the simulator's engine settings.

The simulator accepts the argv that would launch vLLM (``vllm serve``) or SGLang
(``python -m sglang.launch_server``), so servetune launches the simulated engine with exactly the
command line it would give the real one. Only the flags that shape performance are understood;
every other flag of the real engine is accepted and reported once as ignored.

Contract:
- ``parse_engine_argv`` raises ``EngineArgsError`` (message names the flag, the bad value and
  what is allowed) for a known flag with a bad value; it never exits the process itself.
- ``resolve`` fills every engine default that depends on the GPU (vLLM's and SGLang's own
  hardware-dependent defaults, read from their sources: vLLM 0.33 ``get_batch_defaults``,
  SGLang 0.5 ``memory_hook``) and returns a fully concrete ``EngineSetup``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace
from typing import Literal

from worker.sim.catalog import GPUSpec, ModelArch

EngineName = Literal["vllm", "sglang"]
ENGINES: tuple[EngineName, ...] = ("vllm", "sglang")

GPU_ENV_VAR = "SERVETUNE_SIM_GPU"
DEFAULT_GPU = "H100-SXM-80GB"

# Choices as the engines spell them (vLLM CacheDType / SGLang 0.5 kv_cache_dtype), the union
# over the checked-in releases (vLLM 0.11 has no float16; SGLang 0.5.19 adds fp4_e2m1): the
# study's flag registry rejects what its release lacks before the simulator sees it.
VLLM_KV_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
SGLANG_KV_DTYPES = ("auto", "fp8_e5m2", "fp8_e4m3", "mxfp8", "bf16", "bfloat16", "nvfp4",
                    "fp4_mx_block16", "fp4_e2m1")
KV_BYTES = {"mxfp8": 1.0, "nvfp4": 0.5, "fp4_mx_block16": 0.5, "fp4_e2m1": 0.5}
SGLANG_MAX_PREFILL_TOKENS = 16384
SGLANG_SCHEDULE_POLICIES = ("lpm", "random", "fcfs", "dfs-weight", "lof", "priority")
# Weight quantization methods the simulator models, with bytes per weight of quantized layers.
QUANT_WEIGHT_BYTES: dict[str, float] = {
    "fp8": 1.0,
    "fbgemm_fp8": 1.0,
    "modelopt": 1.0,
    "w8a8_fp8": 1.0,
    "w8a8_int8": 1.0,
    "compressed-tensors": 1.0,
    "awq": 0.5 + 1 / 64,  # 4-bit weights + fp16 scale and zero per group of 128
    "awq_marlin": 0.5 + 1 / 64,
    "gptq": 0.5 + 1 / 64,
    "gptq_marlin": 0.5 + 1 / 64,
    "bitsandbytes": 0.5 + 1 / 64,
}
# Methods whose matmuls run on FP8 tensor cores (where the GPU has them).
FP8_COMPUTE_QUANTS = frozenset({"fp8", "fbgemm_fp8", "modelopt", "w8a8_fp8"})


class EngineArgsError(ValueError):
    """A known engine flag has a value the engine would reject."""


@dataclass(frozen=True)
class EngineArgs:
    """The performance-relevant flags of one engine launch, as given (None = engine default)."""

    engine: EngineName
    model: str
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    tp: int = 1
    pp: int = 1
    dp: int = 1
    attn_dp: int = 1
    """SGLang data-parallel attention groups inside the tp GPUs (they add none)."""
    ep: int = 1
    """SGLang expert-parallel size (inside the tp GPUs; not modelled beyond its rule)."""
    dcp: int = 1
    """vLLM decode-context-parallel size (inside the tp GPUs; not modelled beyond its rule)."""
    pcp: int = 1
    """vLLM prefill-context-parallel size (not modelled: only 1 is taken)."""
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    chunked_prefill: bool | None = None
    mem_fraction: float | None = None
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    prefix_caching: bool = True
    block_size: int | None = None
    max_model_len: int | None = None
    schedule_policy: str = "fcfs"
    cuda_graph_max_bs: int | None = None
    ignored_flags: tuple[str, ...] = ()

    @property
    def world_size(self) -> int:
        """GPUs this launch needs: tp × pp × dp replicas for both dialects (as
        ``common.params.world_size`` counts them: attention-DP groups, expert and
        decode-context parallelism reuse the tp GPUs)."""
        return self.tp * self.pp * self.dp


@dataclass(frozen=True)
class SimOptions:
    """Simulator-only options: the GPU it pretends to run on, randomness, timing and faults."""

    gpu: str = DEFAULT_GPU
    seed: int = 0
    noise: float = 0.0
    startup_scale: float = 0.05
    tokenizer: str | None = None
    crash_after_requests: int | None = None
    hang_at_startup: bool = False
    slow_startup_s: float = 0.0
    hang_completions: bool = False
    oom_above_running: int | None = None
    http_error_rate: float = 0.0
    http_error_status: int = 500


@dataclass(frozen=True)
class EngineSetup:
    """Concrete settings of a launch once every engine default is filled in."""

    engine: EngineName
    model: ModelArch
    gpu: GPUSpec
    served_model_name: str
    tp: int
    pp: int
    dp: int
    max_running: int
    token_budget: int
    chunked_prefill: bool
    mixed_batches: bool
    mem_fraction: float
    kv_cache_bytes: float
    weight_bytes: float
    fp8_compute: bool
    quantization: str | None
    prefix_caching: bool
    block_size: int
    max_model_len: int
    schedule_policy: str
    cuda_graph_max_bs: int
    cuda_graph_sizes: int
    args: EngineArgs = field(repr=False, compare=False)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp


def parse_engine_argv(argv: list[str]) -> tuple[EngineArgs, SimOptions]:
    """Parse ``--engine {vllm,sglang}`` plus that engine's flags and the ``--sim-*`` options."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--engine", default="vllm")
    known, rest = pre.parse_known_args(argv)
    if known.engine not in ENGINES:
        raise EngineArgsError(f"--engine: {known.engine!r} is not one of {', '.join(ENGINES)}")
    parser = _vllm_parser() if known.engine == "vllm" else _sglang_parser()
    _add_sim_options(parser)
    ns, unknown = _parse(parser, rest)
    args = _vllm_args(ns, unknown) if known.engine == "vllm" else _sglang_args(ns, unknown)
    return args, _sim_options(ns)


def visible_gpu_count(environ: dict[str, str] | os._Environ[str] | None = None) -> int | None:
    """GPUs listed in CUDA_VISIBLE_DEVICES, else in NVIDIA_VISIBLE_DEVICES (what the NVIDIA
    container runtime exposes in a container); None when neither names GPUs (all visible)."""
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        value = env.get("NVIDIA_VISIBLE_DEVICES")
        if value is None or value.strip() in ("all", "void", "none", ""):
            return None
    return len([item for item in value.split(",") if item.strip()])


def resolve(args: EngineArgs, model: ModelArch, gpu: GPUSpec) -> EngineSetup:
    """Fill in the engine's hardware-dependent defaults and check cross-flag rules."""
    if args.quantization is not None and args.quantization not in QUANT_WEIGHT_BYTES:
        raise EngineArgsError(
            f"--quantization: {args.quantization!r} is not supported by the simulator; "
            f"allowed: {', '.join(sorted(QUANT_WEIGHT_BYTES))}"
        )
    if args.pcp > 1:
        raise EngineArgsError("--prefill-context-parallel-size: the simulator does not model "
                              "prefill context parallelism (use 1)")
    if args.tp % args.dcp:
        raise EngineArgsError(f"--decode-context-parallel-size: tp_size={args.tp} must be "
                              f"divisible by dcp_size={args.dcp}")
    if args.tp % args.ep:
        raise EngineArgsError(f"--ep-size: {args.ep} must divide --tp-size ({args.tp})")
    if args.attn_dp > 1:
        if args.tp % args.attn_dp:
            raise EngineArgsError(f"--tp-size: {args.tp} must be divisible by the attention "
                                  f"data-parallel size ({args.attn_dp})")
        # The performance model has replicas, not attention groups: an attention-DP group is
        # modelled as a replica of tp / attn_dp GPUs (same GPUs in all).
        args = replace(args, tp=args.tp // args.attn_dp, dp=args.dp * args.attn_dp, attn_dp=1)
    if model.num_attention_heads % args.tp:
        raise EngineArgsError(
            f"Total number of attention heads ({model.num_attention_heads}) must be divisible "
            f"by tensor parallel size ({args.tp}).")
    quant = args.quantization or model.quantization
    weight_bytes = QUANT_WEIGHT_BYTES.get(quant, 2.0) if quant else 2.0
    fp8_compute = bool(quant in FP8_COMPUTE_QUANTS and gpu.fp8_dense_tflops)
    kv_bytes = 1.0 if args.kv_cache_dtype.startswith("fp8") else KV_BYTES.get(
        args.kv_cache_dtype, 2.0)
    max_model_len = args.max_model_len or model.max_position_embeddings
    if args.engine == "vllm":
        return _resolve_vllm(args, model, gpu, weight_bytes, kv_bytes, fp8_compute, quant,
                             max_model_len)
    return _resolve_sglang(args, model, gpu, weight_bytes, kv_bytes, fp8_compute, quant,
                           max_model_len)


def _resolve_vllm(args: EngineArgs, model: ModelArch, gpu: GPUSpec, weight_bytes: float,
                  kv_bytes: float, fp8_compute: bool, quant: str | None,
                  max_model_len: int) -> EngineSetup:
    # vLLM 0.33 get_batch_defaults, OPENAI_API_SERVER column.
    big = gpu.memory_gib >= 70 and "a100" not in gpu.name.lower()
    if gpu.memory_gib >= 160:
        default_tokens, default_seqs = 16384, 1024
    elif big:
        default_tokens, default_seqs = 8192, 1024
    else:
        default_tokens, default_seqs = 2048, 256
    chunked = True if args.chunked_prefill is None else args.chunked_prefill
    max_seqs = args.max_num_seqs or default_seqs
    tokens = args.max_num_batched_tokens or default_tokens
    if not chunked and args.max_num_batched_tokens is None:
        tokens = max(tokens, max_model_len)
    if not chunked and tokens < max_model_len:
        raise EngineArgsError(
            f"--max-num-batched-tokens: {tokens} is smaller than max_model_len "
            f"({max_model_len}) with chunked prefill disabled; this effectively limits the "
            "maximum sequence length. Increase --max-num-batched-tokens or decrease "
            "--max-model-len."
        )
    if tokens < max_seqs:
        raise EngineArgsError(
            f"--max-num-batched-tokens: {tokens} must be greater than or equal to "
            f"--max-num-seqs ({max_seqs})"
        )
    # vLLM captures CUDA graphs up to min(2 × max_num_seqs, 512) sequences.
    graph_max = min(2 * max_seqs, 512)
    return EngineSetup(
        engine="vllm", model=model, gpu=gpu,
        served_model_name=args.served_model_name or args.model,
        tp=args.tp, pp=args.pp, dp=args.dp,
        max_running=max_seqs, token_budget=tokens, chunked_prefill=chunked,
        mixed_batches=True,
        mem_fraction=0.92 if args.mem_fraction is None else args.mem_fraction,
        kv_cache_bytes=kv_bytes, weight_bytes=weight_bytes, fp8_compute=fp8_compute,
        quantization=quant, prefix_caching=args.prefix_caching,
        block_size=args.block_size or 16, max_model_len=max_model_len,
        schedule_policy="fcfs", cuda_graph_max_bs=graph_max,
        cuda_graph_sizes=_vllm_graph_size_count(graph_max), args=args,
    )


def _resolve_sglang(args: EngineArgs, model: ModelArch, gpu: GPUSpec, weight_bytes: float,
                    kv_bytes: float, fp8_compute: bool, quant: str | None,
                    max_model_len: int) -> EngineSetup:
    # SGLang 0.5 memory_hook: GPU-memory tiers for chunked prefill size and decode graph size.
    gpu_mb = gpu.memory_gib * 1024
    if gpu_mb < 20 * 1024:
        default_chunk, graph_max = 2048, 8
    elif gpu_mb < 60 * 1024:
        default_chunk, graph_max = 4096, (32 if args.tp < 4 else 160)
    elif gpu_mb < 160 * 1024:
        default_chunk, graph_max = 8192, (256 if args.tp < 4 else 512)
    else:
        default_chunk, graph_max = 16384, 512
    chunk = default_chunk if args.max_num_batched_tokens is None else args.max_num_batched_tokens
    chunked = chunk > 0
    # Without chunking, prefill batches hold up to max_prefill_tokens (16384), and a longer
    # prompt still runs whole when it is alone in the batch.
    budget = chunk if chunked else SGLANG_MAX_PREFILL_TOKENS
    max_running = args.max_num_seqs or 2048
    if args.cuda_graph_max_bs is not None:
        graph_max = args.cuda_graph_max_bs
    elif args.max_num_seqs is not None:
        graph_max = min(graph_max, args.max_num_seqs)
    mem_fraction = args.mem_fraction
    if mem_fraction is None:
        # reserved_mem (MB) = 512 + 1.5 × activation tokens + tp·pp/8 GiB + 2 MB × graph bs,
        # floored at 10 GiB on GPUs above 60 GiB.
        reserved = 512 + 1.5 * max(budget, 2048) + args.tp * args.pp / 8 * 1024 + 2 * graph_max
        if gpu_mb > 60 * 1024:
            reserved = max(reserved, 10 * 1024)
        mem_fraction = round((gpu_mb - reserved) / gpu_mb, 3)
    return EngineSetup(
        engine="sglang", model=model, gpu=gpu,
        served_model_name=args.served_model_name or args.model,
        tp=args.tp, pp=args.pp, dp=args.dp,
        max_running=max_running, token_budget=budget, chunked_prefill=chunked,
        mixed_batches=False, mem_fraction=mem_fraction,
        kv_cache_bytes=kv_bytes, weight_bytes=weight_bytes, fp8_compute=fp8_compute,
        quantization=quant, prefix_caching=args.prefix_caching,
        # SGLang's radix cache is token-granular; the simulator matches 16-token pages.
        block_size=args.block_size or 16, max_model_len=max_model_len,
        schedule_policy=args.schedule_policy, cuda_graph_max_bs=graph_max,
        cuda_graph_sizes=len(_sglang_graph_sizes(graph_max)), args=args,
    )


def _vllm_graph_size_count(max_size: int) -> int:
    sizes = [s for s in (1, 2, 4) if s <= max_size]
    sizes += list(range(8, min(max_size, 256) + 1, 8))
    sizes += list(range(256 + 16, max_size + 1, 16))
    return len(sizes)


def _sglang_graph_sizes(max_size: int) -> list[int]:
    sizes = [1, 2, 4, 8, 12] + list(range(16, 257, 8)) + list(range(272, 512 + 1, 16))
    return [s for s in sizes if s <= max_size] or [max_size]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so callers decide how to report."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise EngineArgsError(message)


def _parse(parser: _Parser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ns, unknown = parser.parse_known_args(argv)
    return ns, unknown


def _positive_int(flag: str):  # type: ignore[no-untyped-def]
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{number} must be >= 1")
        return number

    parse.__name__ = flag
    return parse


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError(f"{number} must be in (0, 1]")
    return number


def _nonneg_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} must be >= 0")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is outside 0-65535")
    return number


def _vllm_parser() -> _Parser:
    p = _Parser(prog="vllm serve", add_help=False, allow_abbrev=False)
    p.add_argument("model_tag", nargs="?", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--tensor-parallel-size", "-tp", type=_positive_int("tp"), default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=_positive_int("pp"), default=1)
    p.add_argument("--data-parallel-size", "-dp", type=_positive_int("dp"), default=1)
    p.add_argument("--max-num-seqs", type=_positive_int("max_num_seqs"), default=None)
    p.add_argument("--max-num-batched-tokens", type=_positive_int("tokens"), default=None)
    p.add_argument("--gpu-memory-utilization", type=_fraction, default=None)
    p.add_argument("--kv-cache-dtype", choices=VLLM_KV_DTYPES, default="auto")
    p.add_argument("--quantization", "-q", default=None)
    p.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction,
                   default=None)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                   default=True)
    p.add_argument("--block-size", type=int, choices=(1, 8, 16, 32, 64, 128), default=None)
    p.add_argument("--max-model-len", type=_positive_int("max_model_len"), default=None)
    # Parallel and dtype flags the parallel/quantization sections emit: parsed so that their
    # values are not mistaken for the positional model; they reuse the tp GPUs (dcp, ep) or
    # do not change the model here (dtype).
    p.add_argument("--decode-context-parallel-size", "-dcp", type=_positive_int("dcp"),
                   default=1)
    p.add_argument("--prefill-context-parallel-size", "-pcp", type=_positive_int("pcp"),
                   default=1)
    p.add_argument("--enable-expert-parallel", "-ep", action=argparse.BooleanOptionalAction,
                   default=False)
    p.add_argument("--dtype", default="auto")
    return p


def _sglang_parser() -> _Parser:
    p = _Parser(prog="sglang.launch_server", add_help=False, allow_abbrev=False)
    p.add_argument("--model-path", "--model", required=True)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=30000)
    p.add_argument("--tp-size", "--tensor-parallel-size", type=_positive_int("tp"), default=1)
    p.add_argument("--dp-size", "--data-parallel-size", type=_positive_int("dp"), default=1)
    p.add_argument("--pp-size", "--pipeline-parallel-size", type=_positive_int("pp"), default=1)
    p.add_argument("--mem-fraction-static", type=_fraction, default=None)
    p.add_argument("--max-running-requests", type=_positive_int("max_running"), default=None)
    p.add_argument("--chunked-prefill-size", type=int, default=None)
    p.add_argument("--schedule-policy", choices=SGLANG_SCHEDULE_POLICIES, default="fcfs")
    p.add_argument("--kv-cache-dtype", choices=SGLANG_KV_DTYPES, default="auto")
    p.add_argument("--quantization", default=None)
    p.add_argument("--cuda-graph-max-bs", type=_positive_int("cuda_graph_max_bs"), default=None)
    p.add_argument("--disable-radix-cache", action="store_true")
    p.add_argument("--page-size", type=_positive_int("page_size"), default=None)
    p.add_argument("--context-length", type=_positive_int("context_length"), default=None)
    p.add_argument("--enable-dp-attention", action="store_true")
    p.add_argument("--attn-dp-size", type=_positive_int("attn_dp"), default=1)
    p.add_argument("--ep-size", "--expert-parallel-size", "--ep", type=_positive_int("ep"),
                   default=1)
    p.add_argument("--attn-cp-size", "--attention-context-parallel-size",
                   type=_positive_int("attn_cp"), default=1)
    p.add_argument("--dcp-size", "--decode-context-parallel-size", type=_positive_int("dcp"),
                   default=1)
    p.add_argument("--flashinfer-mxfp4-moe-precision", choices=("default", "bf16", "fp8"),
                   default="default")
    p.add_argument("--dtype", default="auto")
    return p


def _add_sim_options(p: _Parser) -> None:
    p.add_argument("--sim-gpu", default=os.environ.get(GPU_ENV_VAR, DEFAULT_GPU))
    p.add_argument("--sim-seed", type=int, default=0)
    p.add_argument("--sim-noise", type=_nonneg_float, default=0.0)
    p.add_argument("--sim-startup-scale", type=_nonneg_float, default=0.05)
    p.add_argument("--sim-tokenizer", default=None)
    p.add_argument("--sim-crash-after-requests", type=_positive_int("requests"), default=None)
    p.add_argument("--sim-hang-at-startup", action="store_true")
    p.add_argument("--sim-slow-startup-s", type=_nonneg_float, default=0.0)
    p.add_argument("--sim-hang-completions", action="store_true")
    p.add_argument("--sim-oom-above-running", type=_positive_int("running"), default=None)
    p.add_argument("--sim-http-error-rate", type=_fraction_or_zero, default=0.0)
    p.add_argument("--sim-http-error-status", type=int, choices=(429, 500, 503), default=500)


def _fraction_or_zero(value: str) -> float:
    number = _nonneg_float(value)
    if number > 1:
        raise argparse.ArgumentTypeError(f"{number} must be in [0, 1]")
    return number


def _vllm_args(ns: argparse.Namespace, unknown: list[str]) -> EngineArgs:
    if ns.model_tag and ns.model and ns.model_tag != ns.model:
        raise EngineArgsError(
            f"model given twice: positional {ns.model_tag!r} and --model {ns.model!r}"
        )
    model = ns.model_tag or ns.model
    if not model:
        raise EngineArgsError("the model is required: `vllm serve MODEL` or --model MODEL")

    return EngineArgs(
        engine="vllm", model=model,
        served_model_name=ns.served_model_name[0] if ns.served_model_name else None,
        host=ns.host, port=ns.port,
        tp=ns.tensor_parallel_size, pp=ns.pipeline_parallel_size, dp=ns.data_parallel_size,
        dcp=ns.decode_context_parallel_size, pcp=ns.prefill_context_parallel_size,
        max_num_seqs=ns.max_num_seqs, max_num_batched_tokens=ns.max_num_batched_tokens,
        chunked_prefill=ns.enable_chunked_prefill, mem_fraction=ns.gpu_memory_utilization,
        kv_cache_dtype=ns.kv_cache_dtype, quantization=ns.quantization,
        prefix_caching=ns.enable_prefix_caching, block_size=ns.block_size,
        max_model_len=ns.max_model_len, ignored_flags=tuple(unknown),
    )


def _sglang_args(ns: argparse.Namespace, unknown: list[str]) -> EngineArgs:
    chunk = ns.chunked_prefill_size
    if chunk is not None and chunk != -1 and chunk < 1:
        raise EngineArgsError(
            f"--chunked-prefill-size: {chunk} must be a positive token count, or -1 to disable"
        )
    # Before --attn-dp-size, --enable-dp-attention made --dp-size the attention-DP size.
    dp_attention = ns.enable_dp_attention and ns.dp_size > 1
    attn_dp = ns.dp_size if dp_attention else ns.attn_dp_size
    return EngineArgs(
        engine="sglang", model=ns.model_path, served_model_name=ns.served_model_name,
        host=ns.host, port=ns.port, tp=ns.tp_size, pp=ns.pp_size,
        dp=1 if dp_attention else ns.dp_size, attn_dp=attn_dp, ep=ns.ep_size,
        max_num_seqs=ns.max_running_requests,
        max_num_batched_tokens=chunk,
        chunked_prefill=None if chunk is None else chunk > 0,
        mem_fraction=ns.mem_fraction_static, kv_cache_dtype=ns.kv_cache_dtype,
        quantization=ns.quantization, prefix_caching=not ns.disable_radix_cache,
        block_size=ns.page_size, max_model_len=ns.context_length,
        schedule_policy=ns.schedule_policy, cuda_graph_max_bs=ns.cuda_graph_max_bs,
        ignored_flags=tuple(unknown),
    )


def _sim_options(ns: argparse.Namespace) -> SimOptions:
    return SimOptions(
        gpu=ns.sim_gpu, seed=ns.sim_seed, noise=ns.sim_noise,
        startup_scale=ns.sim_startup_scale, tokenizer=ns.sim_tokenizer,
        crash_after_requests=ns.sim_crash_after_requests,
        hang_at_startup=ns.sim_hang_at_startup, slow_startup_s=ns.sim_slow_startup_s,
        hang_completions=ns.sim_hang_completions, oom_above_running=ns.sim_oom_above_running,
        http_error_rate=ns.sim_http_error_rate, http_error_status=ns.sim_http_error_status,
    )
