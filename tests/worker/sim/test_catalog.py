"""Tests for worker.sim.catalog: counts derived from config shapes match vendors' figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.sim.catalog import (
    GPUS,
    MODELS,
    GPUSpec,
    ModelArch,
    UnknownGPUError,
    UnknownModelError,
    find_gpu,
    find_model,
)

# Published total parameter counts, in billions, and where they are stated. Where the model card
# and the Hub's safetensors count disagree, both are checked.
PUBLISHED_TOTAL_B: list[tuple[str, float, str]] = [
    ("Llama-3.1-8B", 8.03, "HF safetensors count, huggingface.co/meta-llama/Llama-3.1-8B"),
    ("Llama-3.1-70B", 70.6, "HF safetensors count, huggingface.co/meta-llama/Llama-3.1-70B"),
    ("Llama-3.1-405B", 405.0, "Meta's model card (the name); the Hub shows 406B"),
    ("Qwen2.5-7B", 7.61, "Qwen2.5-7B model card"),
    ("Qwen2.5-7B", 7.62, "HF safetensors count"),
    ("Qwen2.5-32B", 32.5, "Qwen2.5-32B model card"),
    ("Qwen2.5-32B", 32.8, "HF safetensors count"),
    ("Qwen2.5-72B", 72.7, "Qwen2.5-72B model card"),
    ("Mixtral-8x7B-v0.1", 46.7, "mistral.ai/news/mixtral-of-experts"),
    ("Qwen3-30B-A3B", 30.5, "Qwen3-30B-A3B model card"),
]

# Qwen's model cards also state a "non-embedding" count (embedding table and lm_head excluded).
PUBLISHED_NON_EMBEDDING_B: list[tuple[str, float]] = [
    ("Qwen2.5-7B", 6.53),
    ("Qwen2.5-32B", 31.0),
    ("Qwen2.5-72B", 70.0),
    ("Qwen3-30B-A3B", 29.9),
]


def _rel_err(computed: int, published_b: float) -> float:
    return abs(computed / 1e9 - published_b) / published_b


@pytest.mark.parametrize(("name", "published_b", "where"), PUBLISHED_TOTAL_B)
def test_total_params_match_published_count_within_1_5_percent(
        name: str, published_b: float, where: str) -> None:
    """Parameters computed from the config shape agree with the published total (<= 1.5%)."""
    computed = MODELS[name].total_params()
    assert _rel_err(computed, published_b) <= 0.015, (name, computed, published_b, where)


@pytest.mark.parametrize(("name", "published_b"), PUBLISHED_NON_EMBEDDING_B)
def test_non_embedding_params_match_qwen_model_cards(name: str, published_b: float) -> None:
    """Total minus embedding and lm_head agrees with Qwen's "non-embedding" figure (<= 1.5%)."""
    computed = MODELS[name].non_embedding_params()
    assert _rel_err(computed, published_b) <= 0.015, (name, computed, published_b)


def test_llama_3_1_8b_total_params_is_exactly_the_checkpoint_tensor_count() -> None:
    """The formula is exact, not just close: 8,030,261,248 weights are in the bf16 checkpoint
    (model.safetensors.index.json total_size 16,060,522,496 bytes / 2)."""
    assert MODELS["Llama-3.1-8B"].total_params() == 8_030_261_248


def test_mixtral_active_params_match_mistral_figure() -> None:
    """Mixtral-8x7B: two of eight experts per token gives Mistral's 12.9B active parameters
    when the embedding table is counted, as Mistral does."""
    mixtral = MODELS["Mixtral-8x7B-v0.1"]
    assert _rel_err(mixtral.active_params(include_embedding=True), 12.9) <= 0.015
    # Without the table (the compute convention) it is 12.75B, still within 1.5% of 12.9B.
    assert _rel_err(mixtral.active_params(), 12.9) <= 0.015


def test_qwen3_moe_active_params_match_qwen_figure_at_its_precision() -> None:
    """Qwen3-30B-A3B: 8 of 128 experts per token is the card's "3.3B activated". The card gives
    two significant figures and our embedding-inclusive count is 3.353B, 1.6% above 3.3B, so
    this check allows 2% instead of the 1.5% used for totals."""
    qwen3 = MODELS["Qwen3-30B-A3B"]
    assert _rel_err(qwen3.active_params(include_embedding=True), 3.3) <= 0.02
    assert 3.3e9 <= qwen3.active_params(include_embedding=True) < 3.4e9


def test_active_params_exclude_only_the_embedding_table_by_default() -> None:
    """The default active count differs from the card convention by exactly vocab x hidden."""
    for model in MODELS.values():
        table = model.vocab_size * model.hidden_size
        assert model.active_params(include_embedding=True) - model.active_params() == table


def test_dense_models_touch_every_weight_but_the_embedding_table_per_token() -> None:
    """For a dense untied model, active (compute) = total - embedding table."""
    for model in MODELS.values():
        if not model.is_moe:
            table = model.vocab_size * model.hidden_size
            assert model.active_params() == model.total_params() - table


def test_tied_embeddings_count_the_matrix_once_in_total_but_as_lm_head_compute() -> None:
    """A tied lm_head adds no weights to the total but its matmul is still per-token compute."""
    untied = MODELS["Qwen2.5-7B"]
    tied = ModelArch(**{**_fields(untied), "name": "tied", "tie_word_embeddings": True})
    table = untied.vocab_size * untied.hidden_size
    assert untied.total_params() - tied.total_params() == table
    assert tied.active_params() == untied.active_params()
    assert tied.active_params(include_embedding=True) == tied.active_params()


def test_llama_3_1_8b_bf16_kv_cache_is_128_kib_per_token() -> None:
    """2 (K,V) x 32 layers x 8 kv heads x 128 head_dim x 2 bytes = 131072 bytes."""
    assert MODELS["Llama-3.1-8B"].kv_bytes_per_token(2) == 131072


def test_kv_bytes_scale_with_element_size_and_use_kv_heads_not_query_heads() -> None:
    """FP8 KV halves the bytes; GQA models size the cache by num_kv_heads."""
    qwen3 = MODELS["Qwen3-30B-A3B"]
    assert qwen3.kv_bytes_per_token(1) == 2 * 48 * 4 * 128
    assert MODELS["Llama-3.1-70B"].kv_bytes_per_token(1) == 2 * 80 * 8 * 128
    with pytest.raises(ValueError):
        qwen3.kv_bytes_per_token(0)


def test_catalog_shapes_match_the_hf_configs() -> None:
    """Spot-check shape fields against the values in the public config.json files."""
    llama = MODELS["Llama-3.1-8B"]
    assert (llama.hidden_size, llama.num_layers, llama.num_attention_heads, llama.num_kv_heads,
            llama.intermediate_size, llama.vocab_size, llama.max_position_embeddings,
            llama.tie_word_embeddings) == (4096, 32, 32, 8, 14336, 128256, 131072, False)
    assert MODELS["Qwen2.5-7B"].attention_bias and not llama.attention_bias
    assert MODELS["Qwen2.5-7B"].max_position_embeddings == 131072
    assert MODELS["Qwen2.5-7B-Instruct"].max_position_embeddings == 32768
    qwen3 = MODELS["Qwen3-30B-A3B"]
    assert (qwen3.num_experts, qwen3.num_experts_per_tok, qwen3.moe_intermediate_size,
            qwen3.intermediate_size, qwen3.max_position_embeddings) == (128, 8, 768, 0, 40960)
    assert all(m.source.startswith("https://huggingface.co/") for m in MODELS.values())
    assert all(m.quantization is None for m in MODELS.values())


# --- from_hf_config ---------------------------------------------------------------------------

LLAMA_8B_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072,
    "tie_word_embeddings": False, "attention_bias": False, "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0, "torch_dtype": "bfloat16",
}
QWEN25_7B_INSTRUCT_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "intermediate_size": 18944, "vocab_size": 152064, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "max_window_layers": 28, "use_sliding_window": False,
}
MIXTRAL_CONFIG: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 32000, "max_position_embeddings": 32768,
    "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False,
    "sliding_window": None,
}
QWEN3_MOE_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
    "head_dim": 128, "intermediate_size": 6144, "moe_intermediate_size": 768,
    "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "vocab_size": 151936, "max_position_embeddings": 40960,
    "tie_word_embeddings": False, "attention_bias": False,
}


def _fields(model: ModelArch) -> dict[str, Any]:
    return {f: getattr(model, f) for f in model.__dataclass_fields__}


def _same_shape(a: ModelArch, b: ModelArch) -> bool:
    skip = {"name", "aliases", "source"}
    return {k: v for k, v in _fields(a).items() if k not in skip} == {
        k: v for k, v in _fields(b).items() if k not in skip}


@pytest.mark.parametrize(("config", "catalog_name"), [
    (LLAMA_8B_CONFIG, "Llama-3.1-8B"),
    (QWEN25_7B_INSTRUCT_CONFIG, "Qwen2.5-7B-Instruct"),
    (MIXTRAL_CONFIG, "Mixtral-8x7B-v0.1"),
    (QWEN3_MOE_CONFIG, "Qwen3-30B-A3B"),
])
def test_from_hf_config_reproduces_the_catalog_entry(
        config: dict[str, Any], catalog_name: str) -> None:
    """Parsing the public config.json yields exactly the hand-entered catalog shape, including
    the implicit Qwen2 qkv bias, Mixtral's expert width and Qwen3's unused dense MLP size."""
    parsed = ModelArch.from_hf_config("parsed", config)
    assert _same_shape(parsed, MODELS[catalog_name])


def test_from_hf_config_reads_offline_quantization_method() -> None:
    """quantization_config.quant_method is recorded (lower-cased); bf16 checkpoints get None."""
    awq = {**QWEN25_7B_INSTRUCT_CONFIG,
           "quantization_config": {"quant_method": "AWQ", "bits": 4, "group_size": 128}}
    assert ModelArch.from_hf_config("awq", awq).quantization == "awq"
    assert ModelArch.from_hf_config("bf16", LLAMA_8B_CONFIG).quantization is None


def test_from_hf_config_defaults_mha_and_head_dim_like_transformers() -> None:
    """No num_key_value_heads means MHA; no head_dim means hidden_size / heads."""
    config = {k: v for k, v in LLAMA_8B_CONFIG.items() if k != "num_key_value_heads"}
    parsed = ModelArch.from_hf_config("mha", config)
    assert parsed.num_kv_heads == 32 and parsed.head_dim == 128


@pytest.mark.parametrize("missing", ["hidden_size", "num_hidden_layers", "vocab_size",
                                     "intermediate_size", "max_position_embeddings"])
def test_from_hf_config_names_the_missing_key(missing: str) -> None:
    """A config without a required key raises ValueError naming that key."""
    config = {k: v for k, v in LLAMA_8B_CONFIG.items() if k != missing}
    with pytest.raises(ValueError, match=missing):
        ModelArch.from_hf_config("broken", config)


def test_from_hf_config_moe_without_expert_width_names_the_key() -> None:
    """A Qwen MoE config lacking moe_intermediate_size is refused by name."""
    config = {k: v for k, v in QWEN3_MOE_CONFIG.items() if k != "moe_intermediate_size"}
    with pytest.raises(ValueError, match="moe_intermediate_size"):
        ModelArch.from_hf_config("broken", config)


def test_from_hf_config_rejects_unsupported_families_and_mixed_layers() -> None:
    """Unknown model_type and interleaved dense/MoE layers fail loudly instead of mis-sizing."""
    with pytest.raises(ValueError, match="deepseek_v3"):
        ModelArch.from_hf_config("ds", {**LLAMA_8B_CONFIG, "model_type": "deepseek_v3"})
    with pytest.raises(ValueError, match="mlp_only_layers"):
        ModelArch.from_hf_config("mixed", {**QWEN3_MOE_CONFIG, "mlp_only_layers": [0]})


def test_model_arch_rejects_inconsistent_shapes() -> None:
    """Heads not divisible by kv heads, or expert fields on a dense model, raise ValueError."""
    base = _fields(MODELS["Llama-3.1-8B"])
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelArch(**{**base, "num_kv_heads": 5})
    with pytest.raises(ValueError, match="num_experts"):
        ModelArch(**{**base, "num_experts_per_tok": 2})


# --- find_model -------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "expected"), [
    ("Llama-3.1-8B", "Llama-3.1-8B"),
    ("llama-3.1-8b", "Llama-3.1-8B"),
    ("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B"),
    ("meta-llama/Meta-Llama-3.1-70B-Instruct", "Llama-3.1-70B"),
    ("Meta-Llama-3.1-8B-Instruct", "Llama-3.1-8B"),
    ("Llama-3.1-70B-Chat", "Llama-3.1-70B"),
    ("someorg/Llama-3.1-8B-Instruct", "Llama-3.1-8B"),
    ("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct"),
    ("qwen2.5-32b", "Qwen2.5-32B"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B-v0.1"),
    ("Qwen/Qwen3-30B-A3B", "Qwen3-30B-A3B"),
])
def test_find_model_matches_names_hf_ids_and_chat_suffixes(query: str, expected: str) -> None:
    """Lookup is case-insensitive over names, HF ids, bare repo names and -Instruct/-Chat."""
    assert find_model(query) is MODELS[expected]


def test_find_model_builds_from_a_local_checkpoint_directory(tmp_path: Path) -> None:
    """A directory with config.json is parsed rather than looked up by name."""
    checkpoint = tmp_path / "my-finetune"
    checkpoint.mkdir()
    awq = {**QWEN25_7B_INSTRUCT_CONFIG, "quantization_config": {"quant_method": "awq"}}
    (checkpoint / "config.json").write_text(json.dumps(awq), encoding="utf-8")
    model = find_model(str(checkpoint))
    assert model.name == "my-finetune"
    assert model.quantization == "awq"
    assert model.source == str(checkpoint / "config.json")
    assert model.total_params() == MODELS["Qwen2.5-7B-Instruct"].total_params()


def test_find_model_reports_a_bad_local_config_by_key(tmp_path: Path) -> None:
    """A local config.json missing a required key raises ValueError naming it."""
    config = {k: v for k, v in LLAMA_8B_CONFIG.items() if k != "vocab_size"}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match="vocab_size"):
        find_model(str(tmp_path))


def test_unknown_model_error_lists_every_known_model() -> None:
    """An unknown name raises UnknownModelError (a ValueError) naming all valid models."""
    with pytest.raises(UnknownModelError) as info:
        find_model("gpt-5-turbo")
    assert isinstance(info.value, ValueError)
    for name in MODELS:
        assert name in str(info.value)


def test_required_models_are_in_the_catalog() -> None:
    """The simulator's required model set is present."""
    for name in ("Llama-3.1-8B", "Llama-3.1-70B", "Qwen2.5-7B", "Qwen2.5-32B",
                 "Mixtral-8x7B-v0.1", "Qwen3-30B-A3B"):
        assert name in MODELS


# --- GPUs -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "expected"), [
    ("H100", "H100-SXM-80GB"),
    ("h100-80gb", "H100-SXM-80GB"),
    ("NVIDIA H100 80GB HBM3", "H100-SXM-80GB"),
    ("NVIDIA_H100_80GB_HBM3", "H100-SXM-80GB"),
    ("h200", "H200-SXM-141GB"),
    ("NVIDIA H200", "H200-SXM-141GB"),
    ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"),
    ("a100", "A100-SXM-80GB"),
    ("l40s", "L40S"),
    ("NVIDIA L40S", "L40S"),
])
def test_find_gpu_matches_names_aliases_and_nvidia_smi_names(query: str, expected: str) -> None:
    """GPU lookup is case-insensitive and accepts nvidia-smi and vLLM spellings."""
    assert find_gpu(query) is GPUS[expected]


def test_unknown_gpu_error_lists_every_known_gpu() -> None:
    """An unknown GPU raises UnknownGPUError (a ValueError) naming all valid GPUs."""
    with pytest.raises(UnknownGPUError) as info:
        find_gpu("RTX 4090")
    assert isinstance(info.value, ValueError)
    for name in GPUS:
        assert name in str(info.value)


def test_gpu_figures_are_dense_datasheet_numbers() -> None:
    """BF16/FP8 are the dense (half of the sparse datasheet) figures; A100 has no FP8."""
    h100, h200, a100, l40s = (GPUS[n] for n in ("H100-SXM-80GB", "H200-SXM-141GB",
                                                  "A100-SXM-80GB", "L40S"))
    assert h100.bf16_dense_tflops == pytest.approx(1979 / 2, rel=0.001)
    assert h100.fp8_dense_tflops == pytest.approx(3958 / 2, rel=0.001)
    assert h200.bf16_dense_tflops == h100.bf16_dense_tflops
    assert (h100.hbm_bandwidth_gb_s, h200.hbm_bandwidth_gb_s) == (3350, 4800)
    assert a100.fp8_dense_tflops is None and a100.bf16_dense_tflops == 312
    assert l40s.fp8_dense_tflops == pytest.approx(2 * l40s.bf16_dense_tflops, rel=0.02)


def test_gpu_interconnect_is_half_the_bidirectional_datasheet_figure() -> None:
    """Per-direction bandwidth: NVLink4 900/2, NVLink3 600/2, PCIe Gen4 x16 64/2 GB/s."""
    assert GPUS["H100-SXM-80GB"].interconnect_gb_s == 900 / 2
    assert GPUS["H200-SXM-141GB"].interconnect_gb_s == 900 / 2
    assert GPUS["A100-SXM-80GB"].interconnect_gb_s == 600 / 2
    assert (GPUS["L40S"].interconnect, GPUS["L40S"].interconnect_gb_s) == ("pcie", 64 / 2)


def test_gpu_memory_is_the_cuda_total_below_the_nvidia_smi_total() -> None:
    """memory_gib is what CUDA reports, a little under nvidia-smi's MiB total / 1024."""
    nvidia_smi_mib = {"H100-SXM-80GB": 81559, "H200-SXM-141GB": 143771,
                      "A100-SXM-80GB": 81920, "L40S": 46068}
    for name, mib in nvidia_smi_mib.items():
        smi_gib = mib / 1024
        assert smi_gib - 1.0 < GPUS[name].memory_gib < smi_gib, name


def test_gpu_spec_rejects_unknown_interconnect() -> None:
    """interconnect must be 'nvlink' or 'pcie'."""
    with pytest.raises(ValueError, match="interconnect"):
        GPUSpec(name="x", aliases=(), memory_gib=1, hbm_bandwidth_gb_s=1, bf16_dense_tflops=1,
                fp8_dense_tflops=None, interconnect="infiniband", interconnect_gb_s=1)
