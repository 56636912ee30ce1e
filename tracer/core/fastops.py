"""A faster SwiGLU for CPU tracing.

MLX's CPU `exp`/`sigmoid` cost ~15 ns per element on one core: in a SmolLM2
block the SiLU alone takes as long as all seven matmuls. Here sigmoid is built
from basic elementwise ops (each ~0.3 ns per element): exp(-x) = 2^n * 2^f,
with n = round(-x log2 e) placed into the float's exponent bits and 2^f from a
degree-6 polynomial on [-0.5, 0.5]. Relative error ~1e-6, like MLX's own. Compiled
(fused into one kernel), it costs ~5 ns per element instead of ~20.
"""

from __future__ import annotations

import math
import threading

import mlx.core as mx
import mlx.nn as nn

_NEG_LOG2E = -1.4426950408889634
_ROUND = 12582912.0  # 1.5 * 2**23: adding and subtracting it rounds a float32 to the nearest integer
_EXP2 = [math.log(2) ** k / math.factorial(k) for k in range(7)]  # 2^f = e^(f ln 2)

# model types whose MLP is down(silu(gate(x)) * up(x)) with these names
SWIGLU_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "olmo2"}


def _exp2(z: mx.array) -> mx.array:
    """2^z for z in [-126, 126]: 2^n in the exponent bits (n = round(z)) times 2^f, f = z - n."""
    n = (z + _ROUND) - _ROUND
    f = z - n
    p = _EXP2[6]
    for c in reversed(_EXP2[:6]):
        p = p * f + c
    return p * ((n.astype(mx.int32) + 127) << 23).view(mx.float32)


def silu_mul(gate: mx.array, up: mx.array) -> mx.array:
    """silu(gate) * up = gate / (1 + exp(-gate)) * up."""
    return gate / (1.0 + _exp2(mx.clip(gate * _NEG_LOG2E, -126.0, 126.0))) * up


def per_thread_compiled(fn):
    """fn compiled into fused kernels (MLX builds them with the system's C++ compiler
    and silently runs the ops unfused where there is none), once per calling thread:
    one compiled function called from several threads, each with its own stream, can
    abort the process at exit."""
    local = threading.local()

    def call(*args):
        compiled = getattr(local, "fn", None)
        if compiled is None:
            compiled = local.fn = mx.compile(lambda *a: fn(*a))
        return compiled(*args)

    return call


# ~3x faster than silu_mul unfused: one pass over memory instead of ~15
fused_silu_mul = per_thread_compiled(silu_mul)


def _exp_below(x: mx.array, top: mx.array) -> mx.array:
    """exp(x - top) for x <= top (below e^-87 it gives 2^-126, not 0)."""
    return _exp2(mx.maximum((x - top) * -_NEG_LOG2E, -126.0))


exp_below = per_thread_compiled(_exp_below)


SUM_BLOCK = 256


def blocked_sum(x: mx.array) -> mx.array:
    """Sum over the last axis (keepdims) in blocks of 256, then over the blocks. MLX's CPU sum
    of float32 accumulates in one running float32, which over a 49k vocabulary is ~1e-4 off
    relative (P(" Paris") 0.70161 instead of 0.70154); in two stages it is ~3e-6, at no
    measurable cost."""
    n = x.shape[-1]
    whole = n - n % SUM_BLOCK
    if whole < 2 * SUM_BLOCK:
        return x.sum(axis=-1, keepdims=True)
    blocks = x[..., :whole].reshape(*x.shape[:-1], whole // SUM_BLOCK, SUM_BLOCK).sum(axis=-1).sum(axis=-1, keepdims=True)
    return blocks + x[..., whole:].sum(axis=-1, keepdims=True) if whole < n else blocks


def logsumexp(x: mx.array) -> mx.array:
    """log(sum(exp(x))) over the last axis, keepdims; on CPU with the fused polynomial
    exp (~3 ns per element against MLX's ~12: the softmax over a 49k vocabulary costs as
    much as the logits' matmul otherwise) and a blocked sum (see blocked_sum)."""
    if mx.default_device() != mx.cpu or x.dtype != mx.float32:
        return mx.logsumexp(x, axis=-1, keepdims=True)
    top = mx.max(x, axis=-1, keepdims=True)
    return top + mx.log(blocked_sum(exp_below(x, top)))


def softmax(x: mx.array) -> mx.array:
    """Softmax over the last axis with logsumexp's precision (MLX's CPU softmax sums in one
    float32 accumulator: ~1e-4 relative off over a 49k vocabulary)."""
    x = x.astype(mx.float32)
    return mx.exp(x - logsumexp(x))


_exact = threading.local()


class exact_activations:
    """Within this context (on this thread) FastSwiGLU uses MLX's own SiLU: the polynomial's
    exponent bits carry no gradient, so differentiated forwards (core/estimate.py) need it."""

    def __enter__(self):
        _exact.on = True

    def __exit__(self, *exc):
        _exact.on = False


class FastSwiGLU(nn.Module):
    """The same MLP (same Linear layers) with silu_mul as its activation."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def __call__(self, x):
        m = self.inner
        if getattr(_exact, "on", False):
            return m.down_proj(nn.silu(m.gate_proj(x)) * m.up_proj(x))
        return m.down_proj(fused_silu_mul(m.gate_proj(x), m.up_proj(x)))


def install_fast_mlp(model: nn.Module, anatomy) -> bool:
    """Swap every MLP for FastSwiGLU when the model type is known to be SwiGLU and
    float32 (where MLX's CPU activation is the bottleneck). Returns whether it did."""
    model_type = getattr(getattr(model, "args", None), "model_type", None)
    if model_type not in SWIGLU_MODEL_TYPES or mx.default_device() != mx.cpu:
        return False
    mlps = [slot.get() for slot in anatomy.mlp]
    names = ("gate_proj", "up_proj", "down_proj")
    if not all(isinstance(m, nn.Module) and all(n in m for n in names) for m in mlps):
        return False
    if not all(type(getattr(m, n)) is nn.Linear and getattr(m, n).weight.dtype == mx.float32 for m in mlps for n in names):
        return False
    for slot, mlp in zip(anatomy.mlp, mlps):
        slot.set(FastSwiGLU(mlp))
    return True
