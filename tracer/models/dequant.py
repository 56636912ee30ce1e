"""Exact float32 dequantization of mlx-lm affine-quantized models (GGUF files are
dequantized by llama.cpp's own `gguf` package instead: tracer/models/gguf.py).

`mx.dequantize` computes w = scale * q + bias in the dtype of `scales`, and
casts to its `dtype` argument only afterwards. mlx-lm scales and biases are
float16/bfloat16, so dequantizing them as they are rounds every weight to half
precision (on the embedded SmolLM2, loaded that way, by up to 3.9e-3). Casting
scales and biases to float32 first makes MLX compute in float32 and gives the
exact values. It runs on the CPU.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def widen_quantization_params(model: nn.Module) -> None:
    """Cast the scales and biases of every affine-quantized module of an mlx-lm
    model to float32, so that dequantizing it (mlx_lm.utils.dequantize_model)
    computes each weight in float32. Other modes (mxfp4, ...) keep their packed
    scales: those are exponents, not floats."""
    for _, module in model.named_modules():
        quantized = "scales" in module and hasattr(module, "bits")
        if not quantized or getattr(module, "mode", "affine") != "affine":
            continue
        module["scales"] = module["scales"].astype(mx.float32, stream=mx.cpu)
        if module.get("biases") is not None:
            module["biases"] = module["biases"].astype(mx.float32, stream=mx.cpu)
