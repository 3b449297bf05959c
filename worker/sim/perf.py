"""The simulator's performance model: GPU memory, startup time and the time of one engine step.

Everything here is a pure function of an ``EngineSetup`` (model, GPU, engine settings); the
scheduler calls ``StepModel.step_time`` once per engine step in both the served and the
virtual-time mode, so both modes see the same numbers. Every formula and constant is stated in
docs/simulator.md; change them together.

Units: seconds, bytes, FLOPs. "Per GPU" quantities are for one GPU of one data-parallel replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.sim.catalog import ModelArch
from worker.sim.engine_args import EngineSetup

GIB = float(1 << 30)

# Efficiencies of the roofline: achievable fraction of datasheet peak.
COMPUTE_EFFICIENCY = 0.6
MEMORY_EFFICIENCY = 0.8
LINK_EFFICIENCY = 0.75
# Latency of one all-reduce (small messages): base + per participating GPU, per interconnect.
ALLREDUCE_LATENCY_S = {"nvlink": (6e-6, 1.5e-6), "pcie": (20e-6, 5e-6)}
P2P_LATENCY_S = {"nvlink": 10e-6, "pcie": 30e-6}
# Per-step CPU and launch overheads.
SCHED_BASE_S = {"vllm": 0.6e-3, "sglang": 0.4e-3}
SCHED_PER_SEQ_S = 3e-6
GRAPH_LAUNCH_S = 0.15e-3
# Fixed GPU time per layer that does not shrink with the shard size (kernel ramp-up and tails,
# synchronisation): why tensor parallelism stops paying off for small models.
KERNEL_FIXED_PER_LAYER_S = 25e-6
EAGER_LAUNCH_PER_LAYER_S = 30e-6
# Memory outside weights, KV cache and activations.
CUDA_CONTEXT_GIB = 0.6
NCCL_BUFFER_GIB = 0.25
GRAPH_MEM_PER_SIZE_GIB = 8 / 1024  # per captured batch size, for a 32-layer stage
# Startup phases.
ENGINE_INIT_S = {"vllm": 12.0, "sglang": 10.0}
WEIGHT_LOAD_GB_S = 2.0  # per GPU, safetensors from page cache / local NVMe
COMPILE_BASE_S = {"vllm": 10.0, "sglang": 0.0}
COMPILE_PER_LAYER_S = {"vllm": 0.25, "sglang": 0.0}
PROFILE_S = 2.0
GRAPH_CAPTURE_PER_SIZE_S = 0.06  # per captured size, for a 32-layer stage
DP_COORDINATION_S = 1.0  # per extra data-parallel replica


@dataclass(frozen=True)
class MemoryPlan:
    """Memory of one GPU after startup, and the engine's failure if it does not fit."""

    total_gib: float
    weights_gib: float
    activation_gib: float
    graph_gib: float
    other_gib: float
    kv_gib: float
    kv_tokens: int
    kv_blocks: int
    headroom_gib: float
    failure: str | None = None
    failure_phase: str | None = None


@dataclass(frozen=True)
class StartupTimes:
    """Real-engine startup phases in seconds (before any time scaling)."""

    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return sum(self.phases.values())


@dataclass(frozen=True)
class BatchShape:
    """What one micro-batch asks of the GPUs in one step.

    ``tokens``: new tokens computed (decode tokens + prefill chunk tokens);
    ``seqs``: sequences producing logits; ``attn_pairs``: Σ new_i × (cached_i + (new_i + 1)/2),
    the causal attention query-key pairs; ``kv_tokens``: Σ (cached_i + new_i) tokens read from
    the KV cache; ``decode_only``: no prefill token in the batch (CUDA graphs apply).
    """

    tokens: int
    seqs: int
    attn_pairs: float
    kv_tokens: int
    decode_only: bool


class StepModel:
    """Step time of one data-parallel replica for a given batch. Stateless and thread-safe."""

    def __init__(self, setup: EngineSetup) -> None:
        self.setup = setup
        m, g = setup.model, setup.gpu
        tp, pp = setup.tp, setup.pp
        self.layers_per_stage = m.num_layers / pp
        embed = m.vocab_size * m.hidden_size
        self.lm_head_params = embed
        linear_total, linear_active, expert_params = linear_params(m)
        self.linear_active_params = linear_active
        # Embeddings, LM head and norms stay in 16 bits under weight quantization.
        dense_bytes = (m.total_params() - linear_total) * 2.0
        linear_bytes = (linear_total - expert_params) * setup.weight_bytes
        self.nonexpert_weight_bytes_gpu = (dense_bytes + linear_bytes) / (tp * pp)
        self.expert_weight_bytes_gpu = expert_params * setup.weight_bytes / (tp * pp)
        kv_heads_gpu = max(m.num_kv_heads // tp, 1)
        self.kv_bytes_per_token_gpu = (2 * self.layers_per_stage * kv_heads_gpu * m.head_dim
                                       * setup.kv_cache_bytes)
        self.linear_peak = (g.fp8_dense_tflops if setup.fp8_compute and g.fp8_dense_tflops
                            else g.bf16_dense_tflops) * 1e12
        self.attn_peak = g.bf16_dense_tflops * 1e12
        self.mem_bw = g.hbm_bandwidth_gb_s * 1e9
        self.link_bw = g.interconnect_gb_s * 1e9
        base, per_gpu = ALLREDUCE_LATENCY_S.get(g.interconnect, ALLREDUCE_LATENCY_S["pcie"])
        self.allreduce_latency_s = base + per_gpu * tp
        self.p2p_latency_s = P2P_LATENCY_S.get(g.interconnect, 30e-6)
        self.sched_base_s = SCHED_BASE_S[setup.engine]

    @property
    def weight_bytes_gpu(self) -> float:
        return self.nonexpert_weight_bytes_gpu + self.expert_weight_bytes_gpu

    def stage_time(self, shape: BatchShape) -> float:
        """GPU time of one pipeline stage for one micro-batch (roofline + comm + launch)."""
        if shape.tokens == 0:
            return 0.0
        s, m = self.setup, self.setup.model
        tp, layers = s.tp, self.layers_per_stage
        linear_flops = 2.0 * (self.linear_active_params * shape.tokens
                              + self.lm_head_params * shape.seqs) / (tp * s.pp)
        attn_flops = (4.0 * layers * m.num_attention_heads * m.head_dim * shape.attn_pairs / tp)
        compute_s = (linear_flops / (self.linear_peak * COMPUTE_EFFICIENCY)
                     + attn_flops / (self.attn_peak * COMPUTE_EFFICIENCY))
        weight_bytes = self.nonexpert_weight_bytes_gpu
        if self.expert_weight_bytes_gpu:
            weight_bytes += self.expert_weight_bytes_gpu * self.experts_touched(shape.tokens)
        bytes_moved = weight_bytes + shape.kv_tokens * self.kv_bytes_per_token_gpu
        memory_s = bytes_moved / (self.mem_bw * MEMORY_EFFICIENCY)
        gpu_s = max(compute_s, memory_s) + KERNEL_FIXED_PER_LAYER_S * layers
        comm_s = 0.0
        if tp > 1:
            message = shape.tokens * m.hidden_size * 2.0
            per_allreduce = (self.allreduce_latency_s
                             + 2 * (tp - 1) / tp * message / (self.link_bw * LINK_EFFICIENCY))
            comm_s = 2 * layers * per_allreduce
        graph = shape.decode_only and shape.seqs <= s.cuda_graph_max_bs
        launch_s = GRAPH_LAUNCH_S if graph else EAGER_LAUNCH_PER_LAYER_S * layers
        return gpu_s + comm_s + launch_s

    def step_time(self, micro_batches: list[BatchShape]) -> float:
        """Wall time of one engine step of a replica: every scheduled sequence advances once.

        With pipeline parallelism the batch is split into ``pp`` micro-batches; each stage
        processes each of them, so the step lasts pp × the slowest micro-batch's stage time plus
        the hand-offs between stages (the pipeline bubble of unequal micro-batches included).
        """
        s = self.setup
        seqs = sum(mb.seqs for mb in micro_batches)
        overhead = self.sched_base_s + SCHED_PER_SEQ_S * seqs
        if s.pp == 1:
            return overhead + sum(self.stage_time(mb) for mb in micro_batches)
        slowest = max(self.stage_time(mb) for mb in micro_batches)
        biggest = max(mb.tokens for mb in micro_batches)
        handoff = (self.p2p_latency_s
                   + biggest * s.model.hidden_size * 2.0 / (self.link_bw * LINK_EFFICIENCY))
        return overhead + s.pp * slowest + (s.pp - 1) * handoff

    def experts_touched(self, tokens: int) -> float:
        """Expected fraction of experts a batch of ``tokens`` routes to in one layer."""
        m = self.setup.model
        if m.num_experts == 0:
            return 0.0
        return 1.0 - (1.0 - m.num_experts_per_tok / m.num_experts) ** tokens

    def activation_bytes(self, tokens: int, seqs: int) -> float:
        """Peak activation memory of a forward pass over ``tokens`` with ``seqs`` logits rows."""
        m, tp = self.setup.model, self.setup.tp
        mlp = (m.intermediate_size if m.num_experts == 0
               else m.num_experts_per_tok * m.moe_intermediate_size
               + m.shared_expert_intermediate_size)
        per_token = (4 * m.hidden_size + 3 * mlp / tp
                     + (m.num_attention_heads + 2 * m.num_kv_heads) * m.head_dim / tp) * 2.0
        logits = seqs * m.vocab_size * 4.0  # fp32 logits for sampling
        return tokens * per_token + logits



def linear_params(m: ModelArch) -> tuple[int, int, int]:
    """(all, per-token active, expert) parameters of the transformer layers' matmuls."""
    q_out = m.num_attention_heads * m.head_dim
    kv_out = m.num_kv_heads * m.head_dim
    attention = m.hidden_size * (q_out + 2 * kv_out) + q_out * m.hidden_size
    dense_mlp = 3 * m.hidden_size * m.intermediate_size
    expert = 3 * m.hidden_size * m.moe_intermediate_size
    shared = 3 * m.hidden_size * m.shared_expert_intermediate_size
    router = m.hidden_size * m.num_experts
    per_layer_total = attention + dense_mlp + m.num_experts * expert + shared + router
    per_layer_active = attention + dense_mlp + m.num_experts_per_tok * expert + shared + router
    layers = m.num_layers
    return (layers * per_layer_total, layers * per_layer_active,
            layers * m.num_experts * expert)


def plan_memory(setup: EngineSetup, step: StepModel | None = None) -> MemoryPlan:
    """Where one GPU's memory goes, and the engine's own error when it does not fit."""
    step = step or StepModel(setup)
    total = setup.gpu.memory_gib
    weights = step.weight_bytes_gpu / GIB
    other = CUDA_CONTEXT_GIB + (NCCL_BUFFER_GIB if setup.tp * setup.pp > 1 else 0.0)
    graph = (setup.cuda_graph_sizes * GRAPH_MEM_PER_SIZE_GIB * step.layers_per_stage / 32)
    common = dict(total_gib=total, weights_gib=weights, graph_gib=graph, other_gib=other)
    if weights + other > total:
        # Loading fails on the first layer shard that no longer fits.
        layer = weights / setup.model.num_layers * setup.pp
        free = max(total - other - weights % layer - (total - other) // layer * layer, 0.0)
        return MemoryPlan(
            **common, activation_gib=0.0, kv_gib=0.0, kv_tokens=0, kv_blocks=0,
            headroom_gib=0.0, failure_phase="load",
            failure=(f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
                     f"{layer:.2f} GiB. GPU 0 has a total capacity of {total:.2f} GiB of which "
                     f"{free:.2f} GiB is free. Including non-PyTorch memory, this process has "
                     f"{total - free:.2f} GiB memory in use. (loading model weights: "
                     f"{weights:.2f} GiB per GPU do not fit)"),
        )
    if setup.engine == "vllm":
        return _plan_vllm(setup, step, common)
    return _plan_sglang(setup, step, common)


def _kv_capacity(setup: EngineSetup, step: StepModel, kv_gib: float) -> tuple[int, int]:
    tokens = int(kv_gib * GIB // step.kv_bytes_per_token_gpu) if kv_gib > 0 else 0
    blocks = tokens // setup.block_size
    return blocks * setup.block_size, blocks


def _plan_vllm(setup: EngineSetup, step: StepModel, common: dict[str, float]) -> MemoryPlan:
    total, weights = common["total_gib"], common["weights_gib"]
    graph, other = common["graph_gib"], common["other_gib"]
    requested = setup.mem_fraction * total
    free_at_start = total - CUDA_CONTEXT_GIB
    activation = step.activation_bytes(setup.token_budget, setup.max_running) / GIB
    kv = requested - weights - activation - graph - (other - CUDA_CONTEXT_GIB)
    tokens, blocks = _kv_capacity(setup, step, kv)
    plan = dict(common, activation_gib=activation, kv_gib=max(kv, 0.0), kv_tokens=tokens,
                kv_blocks=blocks, headroom_gib=total - requested - CUDA_CONTEXT_GIB)
    if requested > free_at_start:
        return MemoryPlan(**plan, failure_phase="load", failure=(
            f"ValueError: Free memory on device cuda:0 ({free_at_start:.2f}/{total:.2f} GiB) "
            f"on startup is less than desired GPU memory utilization "
            f"({setup.mem_fraction}, {requested:.2f} GiB). Decrease GPU memory utilization "
            "or reduce GPU memory used by other processes."))
    if blocks <= 0:
        return MemoryPlan(**plan, failure_phase="profile", failure=(
            "ValueError: No available memory for the cache blocks. Try increasing "
            "`gpu_memory_utilization` when initializing the engine. "
            f"(model weights {weights:.2f} GiB, peak activation {activation:.2f} GiB, "
            f"CUDA graphs {graph:.2f} GiB, budget {requested:.2f} GiB)"))
    if tokens < setup.max_model_len:
        need_gib = setup.max_model_len * step.kv_bytes_per_token_gpu / GIB
        return MemoryPlan(**plan, failure_phase="profile", failure=(
            f"ValueError: To serve at least one request with the models's max seq len "
            f"({setup.max_model_len}), ({need_gib:.2f}"
            f" GiB KV cache is needed, which is larger than the available KV cache memory "
            f"({kv:.2f} GiB). Based on the available memory, the estimated maximum model "
            f"length is {tokens}. Try increasing `gpu_memory_utilization` or decreasing "
            "`max_model_len` when initializing the engine."))
    return MemoryPlan(**plan)


def _plan_sglang(setup: EngineSetup, step: StepModel, common: dict[str, float]) -> MemoryPlan:
    total, weights = common["total_gib"], common["weights_gib"]
    graph, other = common["graph_gib"], common["other_gib"]
    kv = setup.mem_fraction * total - weights - other
    tokens, blocks = _kv_capacity(setup, step, kv)
    headroom = (1.0 - setup.mem_fraction) * total
    activation = step.activation_bytes(setup.token_budget, setup.cuda_graph_max_bs) / GIB
    plan = dict(common, activation_gib=activation, kv_gib=max(kv, 0.0), kv_tokens=tokens,
                kv_blocks=blocks, headroom_gib=headroom)
    if blocks <= 0:
        return MemoryPlan(**plan, failure_phase="profile", failure=(
            "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. "
            f"(weights {weights:.2f} GiB, mem_fraction_static {setup.mem_fraction} of "
            f"{total:.2f} GiB)"))
    if activation + graph > headroom:
        return MemoryPlan(**plan, failure_phase="graph", failure=(
            "Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate "
            f"{activation + graph - headroom + 0.01:.2f} GiB. Possible solutions:\n"
            "1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)\n"
            "2. set --cuda-graph-max-bs to a smaller value (e.g., 16)\n"
            "3. disable torch compile by not using --enable-torch-compile\n"
            "4. disable CUDA graph by --disable-cuda-graph. (Not recommended. Huge "
            "performance loss)"))
    return MemoryPlan(**plan)


def startup_times(setup: EngineSetup, plan: MemoryPlan) -> StartupTimes:
    """How long the real engine takes to become ready (phases up to the failure, if any)."""
    step_layers = setup.model.num_layers / setup.pp
    phases: dict[str, float] = {"init": ENGINE_INIT_S[setup.engine]}
    load = plan.weights_gib * GIB / (WEIGHT_LOAD_GB_S * 1e9)
    if plan.failure_phase == "load":
        phases["load_weights"] = load * 0.5
        return StartupTimes(phases)
    phases["load_weights"] = load
    phases["compile"] = COMPILE_BASE_S[setup.engine] + COMPILE_PER_LAYER_S[setup.engine] * (
        step_layers)
    phases["profile"] = PROFILE_S
    if plan.failure_phase == "profile":
        return StartupTimes(phases)
    phases["cuda_graphs"] = GRAPH_CAPTURE_PER_SIZE_S * setup.cuda_graph_sizes * step_layers / 32
    if plan.failure_phase == "graph":
        phases["cuda_graphs"] *= 0.5
        return StartupTimes(phases)
    if setup.dp > 1:
        phases["dp_coordination"] = DP_COORDINATION_S * (setup.dp - 1)
    return StartupTimes(phases)
