"""`servetune validate` on a study with parallel and quantization sections."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from manager.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "vllm-qwen3moe-intent.yaml"


def test_validate_prints_layouts_with_gpus_and_pruned_ones_with_their_constraint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mixed tp/dp/dcp/quantization space: each remaining layout with its GPU count, each
    pruned one with the constraint (or GPU limit) that removed it."""
    path = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tensor-parallel-size=4,data-parallel-size=2,decode-context-parallel-size=2 " \
           "(8 GPUs)" in out
    assert ("pruned: tensor-parallel-size=1,data-parallel-size=1,decode-context-parallel-size=2"
            " (1 GPU): vllm-dcp-divides-tp: decode-context-parallel-size must divide") in out
    assert "needs 16 GPUs > 8 (largest node)" in out
    assert "search space: 78 configurations" in out  # 13 layouts × 2 kv dtypes × 3 max-num-seqs


def test_validate_warns_when_a_native_flag_overrides_the_section(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(EXAMPLE.read_text() + "fixed_flags:\n  kv-cache-dtype: fp8_e5m2\n")
    with pytest.warns(UserWarning, match="overrides quantization.kv_cache"):
        assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: fixed_flags.kv-cache-dtype overrides quantization.kv_cache" in out
