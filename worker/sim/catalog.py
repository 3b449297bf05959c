"""Catalog of LLM architectures and GPUs that the simulated serving engine models.

Every number here is a public figure: model shapes are copied from each checkpoint's Hugging Face
``config.json`` (the URL is in ``ModelArch.source``), GPU figures from NVIDIA's datasheets (URL in
``GPUSpec.source``). Derived quantities (parameter counts, KV-cache bytes) are computed from the
shapes, never typed in, so the tests can check them against the vendors' published counts.

Contract:
- ``ModelArch.total_params()`` counts every weight of a decoder-only SwiGLU transformer with
  RMSNorm: input embedding, lm_head (once when tied), q/k/v/o projections with the q/k/v bias
  when ``attention_bias``, per-head q/k RMSNorm when ``qk_norm`` (Qwen3), the dense MLP or the
  experts plus the router (and a shared expert with its sigmoid gate when present), two RMSNorms
  per layer and the final norm. Every layer is assumed identical (all dense or all MoE).
- ``ModelArch.active_params()`` counts the weights one token's forward pass multiplies with:
  only ``num_experts_per_tok`` experts, the router, the shared expert, and the lm_head. The input
  embedding table is excluded by default because a token only gathers one row of it (a lookup,
  not a matmul), so compute and weight-streaming estimates should use the default. Model cards
  (Mistral's 12.9B, Qwen's 3.3B) count the embedding table too; ``include_embedding=True``
  reproduces that convention. A tied lm_head is counted as compute even though its matrix is
  the embedding table, because the logits matmul still reads all of it.
- ``ModelArch.kv_bytes_per_token(b)`` is ``2 * layers * kv_heads * head_dim * b`` (K and V).
- ``ModelArch.from_hf_config`` accepts llama, mistral, qwen2, qwen3, mixtral, qwen2_moe and
  qwen3_moe configs; anything else, a missing key or a mixed dense/MoE layer layout raises
  ``ValueError`` whose message names the offending key or value.
- ``find_model`` matches case-insensitively on canonical names, aliases (HF repo ids), bare repo
  names without the organisation and names with an ``-Instruct``/``-Chat`` suffix; a local
  directory containing ``config.json`` is parsed instead. ``find_gpu`` matches case-insensitively
  with spaces and underscores read as hyphens (so nvidia-smi's "NVIDIA H100 80GB HBM3" and
  vLLM's "NVIDIA_H100_80GB_HBM3" both resolve). Unknown names raise ``UnknownModelError`` /
  ``UnknownGPUError`` (both ``ValueError``) listing every valid canonical name.
- ``GPUSpec.memory_gib`` is the total CUDA reports (``torch.cuda.mem_get_info()[1]``, which vLLM
  logs as ``total_gpu_memory``), not the marketing size: that is the pool that engines'
  ``gpu_memory_utilization`` fractions apply to. ``interconnect_gb_s`` is per GPU, per
  direction: NVIDIA quotes NVLink and PCIe as bidirectional totals, and an all-reduce ring step
  sends one way on each link while receiving on the other, so the usable figure is half.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "GPUS",
    "MODELS",
    "GPUSpec",
    "ModelArch",
    "UnknownGPUError",
    "UnknownModelError",
    "find_gpu",
    "find_model",
]


class UnknownModelError(ValueError):
    """A model name that is neither in the catalog nor a directory holding config.json."""


class UnknownGPUError(ValueError):
    """A GPU name that matches no catalog entry or alias."""


# model_type values whose config.json keys mean what from_hf_config assumes. Other families
# (DeepSeek's MLA, Gemma's extra norms, ...) have different weights or KV layouts, so they are
# refused rather than silently mis-sized.
_SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
)
# Qwen2's modeling code always builds q/k/v with a bias; its config.json has no key saying so.
_ALWAYS_QKV_BIAS: frozenset[str] = frozenset({"qwen2", "qwen2_moe"})
# Qwen3 applies an RMSNorm over head_dim to every query and key head.
_QK_NORM_TYPES: frozenset[str] = frozenset({"qwen3", "qwen3_moe"})
# For configs without model_type, the architecture class name identifies the family.
_ARCHITECTURE_TO_MODEL_TYPE: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}


@dataclass(frozen=True)
class ModelArch:
    """Shape of one decoder-only transformer checkpoint, as its config.json states it."""

    name: str
    aliases: tuple[str, ...]
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense SwiGLU MLP width; 0 when every layer is MoE
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool  # bias on q/k/v (Qwen2.x); o_proj never has one in these families
    num_experts: int = 0  # 0 = dense model
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0  # width of one routed expert
    shared_expert_intermediate_size: int = 0  # Qwen2-MoE style always-on expert
    source: str = ""  # URL (or local path) of the config.json the numbers come from
    quantization: str | None = None  # quantization_config.quant_method; None = bf16 weights
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)

    def __post_init__(self) -> None:
        # Reject shapes the parameter formulas cannot describe, so a bad config fails at load
        # time with a message instead of producing a plausible but wrong simulation.
        for field_name in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads",
                           "head_dim", "vocab_size", "max_position_embeddings"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{self.name}: {field_name} must be a positive int, "
                                 f"got {value!r}")
        for field_name in ("intermediate_size", "num_experts", "num_experts_per_tok",
                           "moe_intermediate_size", "shared_expert_intermediate_size"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{self.name}: {field_name} must be a non-negative int, "
                                 f"got {value!r}")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"{self.name}: num_attention_heads ({self.num_attention_heads}) "
                             f"is not a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.num_experts:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                raise ValueError(f"{self.name}: num_experts_per_tok must be in "
                                 f"1..{self.num_experts}, got {self.num_experts_per_tok}")
            if self.moe_intermediate_size <= 0:
                raise ValueError(f"{self.name}: an MoE model needs moe_intermediate_size > 0")
            if self.intermediate_size:
                raise ValueError(f"{self.name}: intermediate_size must be 0 for an MoE model "
                                 "(an always-on MLP is shared_expert_intermediate_size)")
        else:
            if self.intermediate_size <= 0:
                raise ValueError(f"{self.name}: a dense model needs intermediate_size > 0")
            if (self.num_experts_per_tok or self.moe_intermediate_size
                    or self.shared_expert_intermediate_size):
                raise ValueError(f"{self.name}: expert fields are set but num_experts is 0")

    @property
    def is_moe(self) -> bool:
        """True when the MLP of every layer is a routed mixture of experts."""
        return self.num_experts > 0

    def _attention_params(self) -> int:
        q_dim = self.num_attention_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        params = self.hidden_size * (q_dim + 2 * kv_dim) + q_dim * self.hidden_size
        if self.attention_bias:
            params += q_dim + 2 * kv_dim
        if self.qk_norm:
            params += 2 * self.head_dim
        return params

    def _layer_params(self, experts: int) -> int:
        """One decoder layer's weights when ``experts`` routed experts are counted."""
        h = self.hidden_size
        params = self._attention_params() + 2 * h  # + input and post-attention RMSNorm
        # SwiGLU MLPs have three h x width matrices: gate, up and down.
        params += 3 * h * self.intermediate_size
        if self.is_moe:
            params += experts * 3 * h * self.moe_intermediate_size
            params += h * self.num_experts  # router logits: every token scores every expert
        if self.shared_expert_intermediate_size:
            # Qwen2-MoE's shared expert, plus the h -> 1 sigmoid gate that scales its output.
            params += 3 * h * self.shared_expert_intermediate_size + h
        return params

    def _embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        """Every weight in the checkpoint (a tied lm_head is counted once)."""
        lm_head = 0 if self.tie_word_embeddings else self._embedding_params()
        return (self.num_layers * self._layer_params(self.num_experts)
                + self.hidden_size  # final RMSNorm
                + self._embedding_params() + lm_head)

    def non_embedding_params(self) -> int:
        """Total minus the embedding table and the lm_head (Qwen's "non-embedding" figure)."""
        lm_head = 0 if self.tie_word_embeddings else self._embedding_params()
        return self.total_params() - self._embedding_params() - lm_head

    def active_params(self, include_embedding: bool = False) -> int:
        """Weights one token's forward pass multiplies with (see the module docstring).

        MoE layers count ``num_experts_per_tok`` experts. The lm_head is always counted. The
        input embedding table is left out unless ``include_embedding`` (the model-card
        convention); with tied embeddings it is already in as the lm_head, so nothing is added.
        """
        experts = self.num_experts_per_tok if self.is_moe else 0
        params = (self.num_layers * self._layer_params(experts) + self.hidden_size
                  + self._embedding_params())  # lm_head matmul, tied or not
        if include_embedding and not self.tie_word_embeddings:
            params += self._embedding_params()
        return params

    def kv_bytes_per_token(self, kv_dtype_bytes: float) -> float:
        """KV-cache bytes one token occupies across all layers (K and V) at this element size."""
        if kv_dtype_bytes <= 0:
            raise ValueError(f"kv_dtype_bytes must be positive, got {kv_dtype_bytes}")
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * kv_dtype_bytes

    @classmethod
    def from_hf_config(cls, name: str, config: dict[str, Any], *,
                       aliases: tuple[str, ...] = (), source: str = "") -> ModelArch:
        """Build from a Hugging Face ``config.json`` dict (see the module contract)."""
        model_type = config.get("model_type")
        if model_type is None:
            for arch in config.get("architectures") or ():
                model_type = _ARCHITECTURE_TO_MODEL_TYPE.get(arch)
                if model_type:
                    break
        if model_type is not None and model_type not in _SUPPORTED_MODEL_TYPES:
            raise ValueError(f"{name}: unsupported model_type {model_type!r}; supported: "
                             f"{', '.join(_SUPPORTED_MODEL_TYPES)}")

        def require(key: str) -> int:
            value = config.get(key)
            if value is None:
                raise ValueError(f"{name}: config.json has no {key!r} (required for "
                                 f"model_type {model_type or 'unknown'})")
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: config.json {key!r} must be a positive integer, "
                                 f"got {value!r}")
            return value

        hidden = require("hidden_size")
        heads = require("num_attention_heads")
        # HF semantics: a missing or null num_key_value_heads means plain multi-head attention.
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = config.get("head_dim")
        if head_dim is None:
            if hidden % heads:
                raise ValueError(f"{name}: config.json has no 'head_dim' and hidden_size "
                                 f"{hidden} is not divisible by num_attention_heads {heads}")
            head_dim = hidden // heads

        # Mixtral spells the expert count num_local_experts, the Qwen MoE families num_experts.
        num_experts = int(config.get("num_local_experts") or config.get("num_experts") or 0)
        if num_experts:
            experts_per_tok = require("num_experts_per_tok")
            mixtral_style = model_type == "mixtral" or "num_local_experts" in config
            if config.get("moe_intermediate_size") is None and mixtral_style:
                # Mixtral has no moe_intermediate_size: intermediate_size is each expert's width.
                expert_width = require("intermediate_size")
            else:
                expert_width = require("moe_intermediate_size")
            # Qwen-MoE can interleave dense layers; one ModelArch describes identical layers.
            sparse_step = config.get("decoder_sparse_step", 1)
            dense_layers = config.get("mlp_only_layers") or []
            if sparse_step not in (None, 1) or dense_layers:
                raise ValueError(f"{name}: mixed dense/MoE layers are unsupported "
                                 f"(decoder_sparse_step={sparse_step!r}, "
                                 f"mlp_only_layers={dense_layers!r})")
            intermediate = 0  # Qwen-MoE configs carry an unused dense intermediate_size
            shared = int(config.get("shared_expert_intermediate_size") or 0)
        else:
            experts_per_tok = expert_width = shared = 0
            intermediate = require("intermediate_size")

        if model_type in _ALWAYS_QKV_BIAS:
            attention_bias = True
        else:
            attention_bias = bool(config.get("attention_bias", False))

        quant_config = config.get("quantization_config")
        quantization = None
        if isinstance(quant_config, dict) and quant_config.get("quant_method"):
            quantization = str(quant_config["quant_method"]).lower()

        return cls(
            name=name,
            aliases=aliases,
            hidden_size=hidden,
            num_layers=require("num_hidden_layers"),
            num_attention_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=int(head_dim),
            intermediate_size=intermediate,
            vocab_size=require("vocab_size"),
            max_position_embeddings=require("max_position_embeddings"),
            # Every supported family defaults to an untied lm_head when the key is absent.
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=attention_bias,
            num_experts=num_experts,
            num_experts_per_tok=experts_per_tok,
            moe_intermediate_size=expert_width,
            shared_expert_intermediate_size=shared,
            source=source,
            quantization=quantization,
            qk_norm=model_type in _QK_NORM_TYPES,
        )


@dataclass(frozen=True)
class GPUSpec:
    """Datasheet figures for one GPU model, dense (no structured sparsity) throughput."""

    name: str
    aliases: tuple[str, ...]
    memory_gib: float  # total as CUDA reports it, GiB (2**30 bytes)
    hbm_bandwidth_gb_s: float  # device memory bandwidth, GB/s (1e9 bytes)
    bf16_dense_tflops: float
    fp8_dense_tflops: float | None  # None: no FP8 tensor cores
    interconnect: str  # "nvlink" | "pcie"
    interconnect_gb_s: float  # per GPU, per direction, GB/s
    source: str = ""

    def __post_init__(self) -> None:
        if self.interconnect not in ("nvlink", "pcie"):
            raise ValueError(f"{self.name}: interconnect must be 'nvlink' or 'pcie', "
                             f"got {self.interconnect!r}")
        for field_name in ("memory_gib", "hbm_bandwidth_gb_s", "bf16_dense_tflops",
                           "interconnect_gb_s"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"{self.name}: {field_name} must be positive")
        if self.fp8_dense_tflops is not None and self.fp8_dense_tflops <= 0:
            raise ValueError(f"{self.name}: fp8_dense_tflops must be positive or None")


def _hf_config_url(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


def _model_catalog() -> tuple[ModelArch, ...]:
    llama_8b = ModelArch(
        name="Llama-3.1-8B",
        aliases=("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct",
                 "meta-llama/Meta-Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B-Instruct"),
        hidden_size=4096, num_layers=32, num_attention_heads=32, num_kv_heads=8, head_dim=128,
        intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072,
        tie_word_embeddings=False, attention_bias=False,
        source=_hf_config_url("meta-llama/Llama-3.1-8B"),
    )
    llama_70b = ModelArch(
        name="Llama-3.1-70B",
        aliases=("meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct",
                 "meta-llama/Meta-Llama-3.1-70B", "meta-llama/Meta-Llama-3.1-70B-Instruct"),
        hidden_size=8192, num_layers=80, num_attention_heads=64, num_kv_heads=8, head_dim=128,
        intermediate_size=28672, vocab_size=128256, max_position_embeddings=131072,
        tie_word_embeddings=False, attention_bias=False,
        source=_hf_config_url("meta-llama/Llama-3.1-70B"),
    )
    llama_405b = ModelArch(
        name="Llama-3.1-405B",
        aliases=("meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.1-405B-Instruct",
                 "meta-llama/Meta-Llama-3.1-405B", "meta-llama/Meta-Llama-3.1-405B-Instruct"),
        hidden_size=16384, num_layers=126, num_attention_heads=128, num_kv_heads=8,
        head_dim=128, intermediate_size=53248, vocab_size=128256,
        max_position_embeddings=131072, tie_word_embeddings=False, attention_bias=False,
        source=_hf_config_url("meta-llama/Llama-3.1-405B"),
    )
    # Qwen2.5 base checkpoints declare 131072 positions; the -Instruct ones declare 32768 (longer
    # contexts need YaRN rope_scaling added by the user). Engines default max_model_len to this
    # field, so the two variants are separate entries rather than aliases of one.
    qwen_7b = ModelArch(
        name="Qwen2.5-7B",
        aliases=("Qwen/Qwen2.5-7B",),
        hidden_size=3584, num_layers=28, num_attention_heads=28, num_kv_heads=4, head_dim=128,
        intermediate_size=18944, vocab_size=152064, max_position_embeddings=131072,
        tie_word_embeddings=False, attention_bias=True,
        source=_hf_config_url("Qwen/Qwen2.5-7B"),
    )
    qwen_32b = ModelArch(
        name="Qwen2.5-32B",
        aliases=("Qwen/Qwen2.5-32B",),
        hidden_size=5120, num_layers=64, num_attention_heads=40, num_kv_heads=8, head_dim=128,
        intermediate_size=27648, vocab_size=152064, max_position_embeddings=131072,
        tie_word_embeddings=False, attention_bias=True,
        source=_hf_config_url("Qwen/Qwen2.5-32B"),
    )
    qwen_72b = ModelArch(
        name="Qwen2.5-72B",
        aliases=("Qwen/Qwen2.5-72B",),
        hidden_size=8192, num_layers=80, num_attention_heads=64, num_kv_heads=8, head_dim=128,
        intermediate_size=29568, vocab_size=152064, max_position_embeddings=131072,
        tie_word_embeddings=False, attention_bias=True,
        source=_hf_config_url("Qwen/Qwen2.5-72B"),
    )
    instruct_variants = tuple(
        dataclasses.replace(
            base, name=f"{base.name}-Instruct", aliases=(f"Qwen/{base.name}-Instruct",),
            max_position_embeddings=32768, source=_hf_config_url(f"Qwen/{base.name}-Instruct"),
        )
        for base in (qwen_7b, qwen_32b, qwen_72b)
    )
    mixtral = ModelArch(
        name="Mixtral-8x7B-v0.1",
        aliases=("mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1",
                 "Mixtral-8x7B", "Mixtral-8x7B-Instruct"),
        hidden_size=4096, num_layers=32, num_attention_heads=32, num_kv_heads=8, head_dim=128,
        intermediate_size=0, vocab_size=32000, max_position_embeddings=32768,
        tie_word_embeddings=False, attention_bias=False,
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=14336,
        source=_hf_config_url("mistralai/Mixtral-8x7B-v0.1"),
    )
    # Qwen3-30B-A3B: every one of the 48 layers is MoE (decoder_sparse_step 1, no
    # mlp_only_layers), so config.json's intermediate_size 6144 is unused and recorded as 0.
    qwen3_moe = ModelArch(
        name="Qwen3-30B-A3B",
        aliases=("Qwen/Qwen3-30B-A3B",),
        hidden_size=2048, num_layers=48, num_attention_heads=32, num_kv_heads=4, head_dim=128,
        intermediate_size=0, vocab_size=151936, max_position_embeddings=40960,
        tie_word_embeddings=False, attention_bias=False,
        num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
        source=_hf_config_url("Qwen/Qwen3-30B-A3B"), qk_norm=True,
    )
    return (llama_8b, llama_70b, llama_405b, qwen_7b, qwen_32b, qwen_72b, *instruct_variants,
            mixtral, qwen3_moe)


def _gpu_catalog() -> tuple[GPUSpec, ...]:
    return (
        GPUSpec(
            name="H100-SXM-80GB",
            # Bare "H100" means the SXM part: it is what cloud 8-GPU nodes carry (the PCIe and
            # NVL cards have lower clocks and bandwidth and are not in this catalog).
            aliases=("H100", "H100-SXM", "H100-SXM5", "H100-80GB", "H100-SXM5-80GB",
                     "NVIDIA H100 80GB HBM3"),
            memory_gib=79.11,  # vLLM total_gpu_memory on H100 SXM; nvidia-smi shows 81559 MiB
            hbm_bandwidth_gb_s=3350.0,
            bf16_dense_tflops=989.4,  # datasheet 1,979 is with 2:4 sparsity
            fp8_dense_tflops=1978.9,  # datasheet 3,958 is with sparsity
            interconnect="nvlink",
            interconnect_gb_s=450.0,  # NVLink 4: 900 GB/s bidirectional total
            source="https://www.nvidia.com/en-us/data-center/h100/",
        ),
        GPUSpec(
            name="H200-SXM-141GB",
            aliases=("H200", "H200-SXM", "H200-141GB", "NVIDIA H200"),
            memory_gib=139.81,  # CUDA total; nvidia-smi shows 143771 MiB
            hbm_bandwidth_gb_s=4800.0,
            # Same GH100 die and clocks as the H100 SXM; datasheet 1,979 / 3,958 are sparse.
            bf16_dense_tflops=989.4,
            fp8_dense_tflops=1978.9,
            interconnect="nvlink",
            interconnect_gb_s=450.0,  # NVLink 4: 900 GB/s bidirectional total
            source="https://www.nvidia.com/en-us/data-center/h200/",
        ),
        GPUSpec(
            name="A100-SXM-80GB",
            # Bare "A100" means the 80 GB SXM part, the one LLM-serving nodes normally carry.
            aliases=("A100", "A100-80GB", "A100-SXM", "A100-SXM4", "A100-SXM4-80GB",
                     "NVIDIA A100-SXM4-80GB"),
            memory_gib=79.15,  # CUDA total; nvidia-smi shows 81920 MiB
            hbm_bandwidth_gb_s=2039.0,
            bf16_dense_tflops=312.0,  # datasheet 624 is with sparsity
            fp8_dense_tflops=None,  # Ampere has no FP8 tensor cores
            interconnect="nvlink",
            interconnect_gb_s=300.0,  # NVLink 3: 600 GB/s bidirectional total
            source=("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
                    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"),
        ),
        GPUSpec(
            name="L40S",
            aliases=("L40S-48GB", "NVIDIA L40S"),
            memory_gib=44.39,  # CUDA total; nvidia-smi shows 46068 MiB
            hbm_bandwidth_gb_s=864.0,  # GDDR6, not HBM; the field is device-memory bandwidth
            bf16_dense_tflops=362.05,  # datasheet 733 is with sparsity
            fp8_dense_tflops=733.0,  # datasheet 1,466 is with sparsity
            interconnect="pcie",
            interconnect_gb_s=32.0,  # PCIe Gen4 x16: 64 GB/s bidirectional; no NVLink
            source="https://www.nvidia.com/en-us/data-center/l40s/",
        ),
    )


MODELS: dict[str, ModelArch] = {m.name: m for m in _model_catalog()}
GPUS: dict[str, GPUSpec] = {g.name: g for g in _gpu_catalog()}

_Entry = TypeVar("_Entry", ModelArch, GPUSpec)

# Suffixes a served name may carry on top of a catalog name whose weights have the same shape.
_MODEL_SUFFIXES: tuple[str, ...] = ("-instruct", "-chat")


def _bare(name: str) -> str:
    """Repo name without its organisation: "meta-llama/Llama-3.1-8B" -> "Llama-3.1-8B"."""
    return name.rsplit("/", 1)[-1]


def _build_index(entries: dict[str, _Entry], keys_of: Callable[[_Entry], Iterable[str]],
                 normalise: Callable[[str], str]) -> dict[str, _Entry]:
    index: dict[str, _Entry] = {}
    for entry in entries.values():
        for key in keys_of(entry):
            norm = normalise(key)
            other = index.setdefault(norm, entry)
            # Two entries answering to one name would make lookups depend on dict order.
            if other is not entry:
                raise RuntimeError(f"catalog name {key!r} matches both {other.name} and "
                                   f"{entry.name}")
    return index


def _model_keys(model: ModelArch) -> tuple[str, ...]:
    names = (model.name, *model.aliases)
    return tuple(dict.fromkeys((*names, *(_bare(n) for n in names))))


def _normalise_model(name: str) -> str:
    return name.strip().lower()


def _normalise_gpu(name: str) -> str:
    # nvidia-smi separates words with spaces, vLLM's kernel-config files with underscores.
    return re.sub(r"[\s_]+", "-", name.strip().lower())


_MODEL_INDEX: dict[str, ModelArch] = _build_index(MODELS, _model_keys, _normalise_model)
_GPU_INDEX: dict[str, GPUSpec] = _build_index(
    GPUS, lambda g: (g.name, *g.aliases), _normalise_gpu)


def _model_candidates(name: str) -> list[str]:
    """Keys to try, most specific first: as given, without org, without a chat suffix."""
    query = _normalise_model(name)
    bare = _bare(query)
    candidates = [query, bare]
    for suffix in _MODEL_SUFFIXES:
        if bare.endswith(suffix):
            candidates.append(bare[: -len(suffix)])
    return candidates


def find_model(name_or_path: str) -> ModelArch:
    """Catalog entry for a model name/HF id, or the architecture of a local checkpoint dir."""
    path = Path(name_or_path).expanduser()
    config_file = path / "config.json"
    if path.is_dir() and config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_file}: not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: expected a JSON object")
        return ModelArch.from_hf_config(path.resolve().name, config, source=str(config_file))
    for candidate in _model_candidates(name_or_path):
        model = _MODEL_INDEX.get(candidate)
        if model is not None:
            return model
    raise UnknownModelError(
        f"unknown model {name_or_path!r}; known models: {', '.join(MODELS)} "
        "(HF ids such as meta-llama/Llama-3.1-8B-Instruct also work, or pass a local "
        "directory containing config.json)")


def find_gpu(name: str) -> GPUSpec:
    """Catalog entry for a GPU name, alias or nvidia-smi name."""
    gpu = _GPU_INDEX.get(_normalise_gpu(name))
    if gpu is None:
        raise UnknownGPUError(f"unknown GPU {name!r}; known GPUs: {', '.join(GPUS)}")
    return gpu
