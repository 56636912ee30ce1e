"""The memory plan: what a model's weights and a trace's working set need, from the model's shape
(read before loading: tracer/models/shape.py), against the memory available.

The working set of a trace is:
- the recordings: the corrupted run's (schedule.recording_bytes: every layer's hidden states and
  keys/values for every noise sample) and the clean run's (three kinds at every layer, one row);
- the forwards in flight: one per worker, each of the batch's token-rows' activations inside a
  block and its rows' last-position logits (schedule.batch_limits_for); the corrupted run is
  recorded in batches of schedule.record_batch_rows rows, before any patched forward.

The front door (tracer/api.py) refuses a model whose plan does not fit, in one line; `tracer-tui
doctor --model M` prints the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from ..errors import ModelError
from ..models.shape import ModelShape
from . import schedule

DEFAULT_SAMPLES = 10  # the CLI's and the API's default
PLAN_TOKENS = 32  # the prompt length a load is planned for (the paper's prompts have ~10)
PLAN_WORKERS = 2  # forwards in flight (workers.default_workers on a multi-core CPU)
# --keep-quantized on CPU: a trace's time against float32's, measured by benchmarks/scale.py
# --keep-quantized on the SmolLM2-135M and Llama-3.2-1B shapes, 4-bit (34x and 30x: MLX's CPU
# quantized matmul ran at ~2.3 GFLOP/s; README, "Performance").
QUANTIZED_SLOWDOWN = "~30x"

GiB = 1 << 30


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes a model and a trace need, and the memory available (None: unknown, no check)."""

    shape: ModelShape
    bytes_per_weight: float
    weight_bytes: int
    recording_bytes: int
    forward_bytes: int
    n_tokens: int
    samples: int
    batch_tokens: int
    workers: int
    available: int | None
    where: str  # "RAM" or "GPU memory"

    @property
    def need(self) -> int:
        return self.weight_bytes + self.recording_bytes + self.forward_bytes

    @property
    def fits(self) -> bool:
        return self.available is None or self.need <= self.available

    def lines(self) -> list[str]:
        """The plan as doctor prints it."""
        s = self.shape
        avail = "unknown" if self.available is None else f"{_gib(self.available)} GiB"
        return [
            f"shape: {s.arch}, {s.layers} layers, hidden {s.hidden}, intermediate {s.intermediate}, "
            f"{s.heads} heads ({s.kv_heads} KV, head_dim {s.head_dim}), vocab {s.vocab}, "
            f"{s.n_params / 1e6:.1f}M weights",
            f"weights: {_gib(self.weight_bytes)} GiB ({self.bytes_per_weight:.2f} bytes per weight loaded"
            f"{', quantized' if self.bytes_per_weight < 4 else ', float32' if self.bytes_per_weight == 4 else ''})",
            f"trace ({self.samples} samples, {self.n_tokens} tokens, {self.workers} forwards of "
            f"{self.batch_tokens} token-rows): recordings {_gib(self.recording_bytes)} GiB, "
            f"forwards {_gib(self.forward_bytes)} GiB",
            f"needed: {_gib(self.need)} GiB; available ({self.where}): {avail}: "
            + ("fits" if self.fits else "does NOT fit"),
        ]

    def refusal(self, name: str) -> str:
        """The one line the front door refuses a model with."""
        advice = []
        if self.bytes_per_weight >= 4 and self.shape.quantized:
            packed = _gib(self.shape.kept_bytes if self.shape.kept_bytes is not None else self.shape.stored_bytes)
            advice.append(f"--keep-quantized ({packed} GiB of weights; forwards {QUANTIZED_SLOWDOWN} slower on CPU)")
        advice += ["fewer samples (--samples)", "a smaller batch", "a machine with more memory"]
        return (f"{name} needs ~{_gib(self.need)} GiB ({_gib(self.weight_bytes)} GiB of weights + "
                f"{_gib(self.recording_bytes + self.forward_bytes)} GiB for a {self.samples}-sample trace of "
                f"{self.n_tokens} tokens); {_gib(self.available or 0)} GiB of {self.where} is available: "
                f"use {', or '.join(advice)}")


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}" if n < 10 * GiB else f"{n / GiB:.1f}"


def loaded_bytes_per_weight(shape: ModelShape, *, keep_quantized: bool, on_cpu: bool) -> float:
    """Bytes per weight once loaded: float32 on CPU (quantized weights dequantized, half floats
    widened), unless --keep-quantized keeps them packed; on a GPU, as stored."""
    if on_cpu and not (keep_quantized and shape.quantized):
        return 4.0
    kept = shape.kept_bytes if shape.kept_bytes is not None else shape.stored_bytes
    return kept / max(1, shape.n_params)


def plan_memory(shape: ModelShape, *, n_tokens: int = PLAN_TOKENS, samples: int = DEFAULT_SAMPLES,
                keep_quantized: bool = False, batch_tokens: int | None = None, workers: int = PLAN_WORKERS,
                packed: bool = True, available: int | None = None, on_cpu: bool | None = None) -> MemoryPlan:
    """The memory plan of a model and one trace of it (every cell kind, all positions).

    Args:
        shape: the model's shape (models.shape.read_shape).
        n_tokens: the prompt's tokens.
        samples: noise samples.
        keep_quantized: weights kept packed (see loaded_bytes_per_weight).
        batch_tokens: token-rows per forward; None: what schedule.batch_limits_for picks.
        workers: forwards in flight at once.
        packed: packed forwards (llama-style models on CPU).
        available: bytes available; None: schedule.device_memory_bytes() (None there: unknown).
        on_cpu: None: whether MLX's default device is the CPU.

    Returns:
        The MemoryPlan.
    """
    on_cpu = mx.default_device() == mx.cpu if on_cpu is None else on_cpu
    if available is None:
        available = schedule.device_memory_bytes()
    per_weight = loaded_bytes_per_weight(shape, keep_quantized=keep_quantized, on_cpu=on_cpu)
    weights = int(shape.n_params * per_weight)
    recorded = schedule.recording_bytes(samples, n_tokens, shape.layers, shape.hidden, shape.kv_per_token,
                                        packed=packed)
    clean = 3 * shape.layers * n_tokens * shape.hidden * 4 + n_tokens * shape.kv_per_token * 4
    if batch_tokens is None:
        room = max(0, (available if available is not None else 16 * GiB) - weights - recorded)
        _, batch_tokens = schedule.batch_limits_for(shape.hidden, shape.intermediate, shape.vocab, n_tokens,
                                                    room, packed=packed, on_cpu=on_cpu)
    per_token = schedule.activation_bytes_per_token(shape.hidden, shape.intermediate)
    rows = max(1, min(batch_tokens, samples * n_tokens * shape.layers * 3))
    forward = batch_tokens * per_token + rows * schedule.logit_bytes_per_row(shape.vocab)
    recording_batch = schedule.RECORD_TOKENS * per_token
    return MemoryPlan(shape, per_weight, weights, recorded + clean, max(workers * forward, recording_batch),
                      n_tokens, samples, batch_tokens, workers, available,
                      "RAM" if on_cpu else "GPU memory")


def check_model_fits(spec: str | None, *, keep_quantized: bool = False, samples: int = DEFAULT_SAMPLES,
                     n_tokens: int = PLAN_TOKENS) -> MemoryPlan | None:
    """Refuse, before loading, a model whose plan does not fit the memory available.

    Args:
        spec: what load_model is given (None: the embedded model, which is not checked: 0.5 GiB).
        keep_quantized, samples, n_tokens: as in plan_memory.

    Returns:
        The plan, or None where the shape cannot be known before loading (then no check).

    Raises:
        ModelError: one line: what is needed, what is available, what to do.
    """
    from ..models.load import DEFAULT_MODEL
    from ..models.shape import read_shape

    if not isinstance(spec, str) or spec == DEFAULT_MODEL:
        return None  # the embedded model, or a spec the loader refuses
    shape = read_shape(spec)
    if shape is None:
        return None
    plan = plan_memory(shape, n_tokens=n_tokens, samples=samples, keep_quantized=keep_quantized)
    if not plan.fits:
        raise ModelError(plan.refusal(spec))
    return plan
