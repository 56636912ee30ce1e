"""The CPU fast paths: the polynomial SiLU (plain and fused) and the packed forward."""

import json
import shutil
import threading

from tracer.core.fastops import fused_silu_mul, silu_mul
from tracer.core.tracing import Tracer, run_trace
from tracer.errors import TraceCancelled
from tracer.events import CellsDone
from tracer.models.load import load_model
from tracer.types import TraceRequest

import mlx.core as mx
import numpy as np
import pytest

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


def _reference(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    g = gate.astype(np.float64)
    return g / (1.0 + np.exp(-g)) * up.astype(np.float64)


def _inputs():
    rng = np.random.default_rng(0)
    gate = np.concatenate([np.linspace(-100, 100, 4001), rng.normal(0, 3, 4000)]).astype(np.float32)
    up = rng.normal(0, 1, gate.shape).astype(np.float32)
    return gate, up


@pytest.mark.parametrize("fn", [silu_mul, fused_silu_mul], ids=["plain", "fused"])
def test_silu_mul_matches_float64(fn):
    gate, up = _inputs()
    got = np.array(fn(mx.array(gate), mx.array(up)))
    want = _reference(gate, up)
    # relative to the value, with an absolute floor where silu underflows towards 0
    assert np.all(np.abs(got - want) <= 2e-6 * np.abs(want) + 1e-30 + 1e-7 * np.abs(up))
    assert got[0] == 0.0 or abs(got[0]) < 1e-30  # silu(-100) ~ -4e-42
    assert got[4000] == pytest.approx(100 * up[4000], rel=1e-6)


def test_fused_silu_mul_on_worker_threads_with_own_streams():
    gate, up = _inputs()
    want = np.array(silu_mul(mx.array(gate), mx.array(up)))
    results = {}

    def work(i):
        mx.set_default_stream(mx.new_stream(mx.cpu))
        results[i] = np.array(fused_silu_mul(mx.array(gate), mx.array(up)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        np.testing.assert_allclose(results[i], want, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("arch,packed", [("llama", True), ("qwen2", True), ("gemma2", False), ("gpt2", False),
                                         ("phi3", False), ("olmo2", False)])
def test_packed_forward_used_for_plain_llama_style_models(tiny_model_factory, arch, packed):
    tracer = Tracer(load_model(str(tiny_model_factory(arch))), workers=1)
    assert (tracer.patchable.packed is not None) == packed


ROPE_VARIANTS = {
    "traditional": {"rope_traditional": True},  # the embedded SmolLM2's (GGUF) layout
    "llama3-scaled": {"rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
}


@pytest.fixture(scope="module")
def model_variant(tiny_model_factory, tmp_path_factory):
    """`get(name)`: a tiny model directory: an arch, or the llama with a ROPE_VARIANTS config."""

    def get(name):
        if name not in ROPE_VARIANTS:
            return tiny_model_factory(name)
        path = tmp_path_factory.mktemp(name)
        shutil.copytree(tiny_model_factory("llama"), path, dirs_exist_ok=True)
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, **ROPE_VARIANTS[name]}))
        return path

    return get


@pytest.mark.parametrize("arch", ["llama", "qwen2", *ROPE_VARIANTS])
@pytest.mark.parametrize("positions", ["all", (1, 3, -1)])
def test_packed_equals_dense_with_mixed_rows(model_variant, arch, positions):
    """One chunk per start layer mixes rows with different first positions (and cells
    restoring several positions): the packed forward equals the dense one."""
    tracer = Tracer(load_model(str(model_variant(arch))), workers=1)
    tracer.target_tokens = 10**6
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp", "attn"), samples=3, window=3, seed=5,
                       positions=positions)
    packed = run_trace(tracer, req)
    tracer.patchable.packed = None
    dense = run_trace(tracer, req)
    for kind in req.kinds:
        for metric in ("prob", "logit_diff"):
            np.testing.assert_allclose(np.array(packed.grids[kind][metric]), np.array(dense.grids[kind][metric]),
                                       atol=1e-5, err_msg=f"{arch} {kind} {metric}")
    assert np.ptp(np.array(packed.grids["mlp"]["prob"])) > 1e-4


def test_rope_variants_take_their_paths(model_variant):
    """Plain RoPE uses the fused tables; other rotary classes their own module."""
    from tracer.core.packed import _Rope

    positions = np.array([0, 3, 7])
    for name, tables in (("traditional", True), ("llama3-scaled", False)):
        attn = load_model(str(model_variant(name))).model.layers[0].self_attn
        assert (_Rope(attn.rope, attn.head_dim, positions).tables is not None) == tables


def test_logsumexp_matches_float64():
    from tracer.core.fastops import logsumexp

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 4, (3, 5000)), np.full((1, 5000), -1e4)], axis=0).astype(np.float32)
    x[3, 7] = 20.0  # one dominant entry, the rest underflow
    x[0, :10] = -200.0  # below exp's range
    got = np.array(logsumexp(mx.array(x)))[:, 0]
    x64 = x.astype(np.float64)
    top = x64.max(axis=1)
    want = top + np.log(np.exp(x64 - top[:, None]).sum(axis=1))
    mlx_own = np.array(mx.logsumexp(mx.array(x), axis=-1))
    # float32 summation dominates the error: as accurate as MLX's own, within 1e-6
    assert np.all(np.abs(got - want) <= np.abs(mlx_own - want) + 1e-6)
    assert np.abs(got - want).max() < 1e-5
    assert got[3] == pytest.approx(20.0, abs=1e-6)


@pytest.mark.parametrize("n,T,heads,kv_heads", [(6, 10, 9, 3), (1, 7, 4, 4), (3, 3, 6, 2)])
def test_attention_equals_mlx_sdpa(n, T, heads, kv_heads):
    from tracer.core.packed import attention

    mx.random.seed(n + T)
    q = mx.random.normal((5, heads, n, 16))
    k, v = mx.random.normal((5, kv_heads, T, 16)), mx.random.normal((5, kv_heads, T, 16))
    offset = T - n  # the queries are the last n positions
    mask = np.where(np.arange(T)[None, :] <= np.arange(offset, T)[:, None], 0.0, -np.inf).astype(np.float32)
    got = attention(q, k, v, 0.25, mx.array(mask) if n > 1 else None)
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal" if n > 1 else None)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=2e-6)


class CancelOnSecondCheck(threading.Event):
    """Reads as set from its second check on: the first is the workers' check before
    the first forward, so the second can only be one made inside that forward."""

    def __init__(self):
        super().__init__()
        self.checks = 0

    def is_set(self):
        self.checks += 1
        return self.checks >= 2


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # the packed forward and the generic one
def test_cancel_stops_a_forward_between_layers(tiny_model_factory, arch):
    tracer = Tracer(load_model(str(tiny_model_factory(arch))), workers=1)
    tracer.target_tokens = 10**6  # one big forward per start layer
    cancel = CancelOnSecondCheck()
    events = []
    # mlp cells start at their window's first layer, so every forward computes layers
    req = TraceRequest(PROMPT, SUBJECT, kinds=("mlp",), samples=2, window=3, seed=1)
    with pytest.raises(TraceCancelled):
        run_trace(tracer, req, on_event=events.append, cancel=cancel)
    assert cancel.checks == 2
    done = [e for e in events if isinstance(e, CellsDone)]
    # only the cells that need no forward (positions before the subject) were delivered
    assert all(e.cells and all(row < 1 for row, _ in e.cells) for e in done)


def test_softmax_and_logsumexp_are_precise_over_a_large_vocabulary():
    """P(token) to ~1e-5 relative over 49k logits (a single float32 accumulator is ~1e-4 off,
    which put every cell of a trace 1e-4 above ROME's numbers)."""
    from tracer.core.fastops import logsumexp, softmax

    import mlx.core as mx

    rng = np.random.default_rng(0)
    for vocab in (49152, 49153, 700):
        x = (rng.standard_normal((6, vocab)) * 4).astype(np.float32)
        x[:, 7] += 12
        x64 = x.astype(np.float64)
        exact = np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1, keepdims=True)) + x64.max(1, keepdims=True)
        probs = np.exp(x64 - exact)
        np.testing.assert_allclose(np.array(softmax(mx.array(x))), probs, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(np.array(logsumexp(mx.array(x))), exact, rtol=0, atol=2e-5)
