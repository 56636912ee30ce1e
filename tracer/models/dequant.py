"""Exact float32 dequantization of affine-quantized weights (GGUF Q4_0/Q4_1/Q8_0
and mlx-lm quantized models).

`mx.dequantize` computes w = scale * q + bias in the dtype of `scales`, and
casts to its `dtype` argument only afterwards. GGUF scales and biases load as
float16 (mlx-lm ones are float16/bfloat16), so dequantizing them as they are
rounds every weight to half precision: the embedded SmolLM2's weights then
differ from the GGUF's true values (computed in float32, as llama.cpp and
gguf-py do) by up to 3.9e-3 (9.7e-4 in the token embedding). Casting scales and biases to float32 first makes
MLX compute in float32 and gives those values exactly. It runs on the CPU.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def dequantize_f32(weight: mx.array, scales: mx.array, biases: mx.array, *, group_size: int, bits: int) -> mx.array:
    """scale * q + bias per group, computed in float32 on the CPU."""
    return mx.dequantize(
        weight,
        scales.astype(mx.float32, stream=mx.cpu),
        biases.astype(mx.float32, stream=mx.cpu),
        group_size=group_size,
        bits=bits,
        stream=mx.cpu,
    )


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
