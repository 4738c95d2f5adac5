"""The CUDA path of precompute-embeddings: bf16 autocast and flash-attn 2 (sdpa without it)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from tests.integration.test_precompute import COMMON, load_rows

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_bf16_embeddings_agree_with_cpu(cli, menyo_small, tmp_path):
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    args = ["precompute-embeddings", "--input", str(menyo_small), *COMMON, "--dtype", "float32"]
    cli(*args, "--output", str(cpu), "--device", "cpu", check=True)
    done = cli(*args, "--output", str(gpu), "--device", "cuda", check=True)
    expected = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    assert f"attention={expected}" in done.stderr and "autocast=torch.bfloat16" in done.stderr
    a = np.asarray(load_rows(cpu)["teacher_embedding_final"])
    b = np.asarray(load_rows(gpu)["teacher_embedding_final"])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99  # bf16 rounding, not a different model
