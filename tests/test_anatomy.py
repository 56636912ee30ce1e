"""find_anatomy on every tiny architecture: layer count, hidden size, and the
shapes the attention / MLP / block slots actually produce in a forward pass."""

from tracer.errors import ModelError
from tracer.models.anatomy import find_anatomy
from tracer.models.load import load_model

import mlx.core as mx
import mlx.nn as nn
import pytest
from oracle import Hook
from tiny import ARCHS, HIDDEN, n_layers

PROMPT = "The Eiffel Tower is located in the city of"


def recorder(inner, log: list, key) -> Hook:
    """A pass-through wrapper that logs the wrapped module's output shape."""

    def record(out):
        first = out[0] if isinstance(out, tuple) else out
        log.append((key, tuple(first.shape)))
        return out

    hook = Hook(inner)
    hook.fn = record
    return hook


@pytest.fixture(scope="module")
def loaded(tiny_model_dirs):
    return {arch: load_model(str(d)) for arch, d in tiny_model_dirs.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_anatomy_counts(arch, loaded):
    lm = loaded[arch]
    anatomy = find_anatomy(lm.model)
    assert anatomy.n_layers == n_layers(arch) == lm.n_layers
    assert anatomy.hidden_size == HIDDEN
    assert anatomy.embed_weight().shape == (lm.tokenizer.get_vocab_size(), HIDDEN)
    assert anatomy.final_norm is not None
    assert len(anatomy.attn) == len(anatomy.mlp) == anatomy.n_layers
    # every slot resolves to a distinct module inside its own block
    for i in range(anatomy.n_layers):
        block = anatomy.block(i).get()
        assert anatomy.attn[i].parent is block
        assert anatomy.mlp[i].parent is block
        assert anatomy.attn[i].get() is not anatomy.mlp[i].get()
    assert lm.source == "mlx-lm" and not lm.quantized
    assert arch in lm.summary() or lm.name in lm.summary()


@pytest.mark.parametrize("arch", ARCHS)
def test_slot_outputs_are_hidden_states(arch, loaded):
    lm = loaded[arch]
    model = lm.model
    anatomy = find_anatomy(model)
    ids = lm.tokenizer.encode(PROMPT).ids
    T = len(ids)
    x = mx.array([ids])
    base = model(x)
    mx.eval(base)

    log: list = []
    slots = [("block", i, anatomy.block(i)) for i in range(anatomy.n_layers)]
    slots += [("attn", i, s) for i, s in enumerate(anatomy.attn)]
    slots += [("mlp", i, s) for i, s in enumerate(anatomy.mlp)]
    originals = [s.get() for _, _, s in slots]
    try:
        # wrap inner slots first: attn/mlp live inside the blocks
        for (kind, i, slot), orig in reversed(list(zip(slots, originals))):
            slot.set(recorder(orig, log, (kind, i)))
        out = model(x)
        mx.eval(out)
    finally:
        for (_kind, _i, slot), orig in zip(slots, originals):
            slot.set(orig)

    seen = {}
    for key, shape in log:
        seen.setdefault(key, []).append(shape)
    for kind in ("block", "attn", "mlp"):
        for i in range(anatomy.n_layers):
            assert seen.get((kind, i)) == [(1, T, HIDDEN)], (kind, i, seen.get((kind, i)))
    assert out.shape == (1, T, lm.tokenizer.get_vocab_size())
    assert mx.allclose(out, base, atol=1e-5).item()
    # restored: the slots hold the original modules again
    assert all(s.get() is o for (_, _, s), o in zip(slots, originals))


def test_slots_change_the_output(loaded):
    """A slot is really on the forward path: zeroing one MLP output changes the logits."""
    lm = loaded["llama"]
    anatomy = find_anatomy(lm.model)
    x = mx.array([lm.tokenizer.encode(PROMPT).ids])
    base = lm.model(x)

    class Zero(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def __call__(self, *a, **k):
            return mx.zeros_like(self.inner(*a, **k))

    slot = anatomy.mlp[2]
    orig = slot.get()
    slot.set(Zero(orig))
    try:
        changed = lm.model(x)
    finally:
        slot.set(orig)
    assert not mx.allclose(changed, base, atol=1e-4).item()
    assert mx.allclose(lm.model(x), base, atol=1e-5).item()


def test_quantized_embedding_hidden_size(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    nn.quantize(lm.model, group_size=32, bits=4)
    anatomy = find_anatomy(lm.model)
    assert isinstance(anatomy.embed.get(), nn.QuantizedEmbedding)
    assert anatomy.hidden_size == HIDDEN
    assert anatomy.embed_weight().shape == (lm.tokenizer.get_vocab_size(), HIDDEN)
    assert anatomy.embed_weight().dtype == mx.float32


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(4, 4)


class _NoMlpBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = _Attn()
        self.input_layernorm = nn.RMSNorm(4)


class _NoAttnBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Linear(4, 4)


class _Fake(nn.Module):
    def __init__(self, blocks, embed=True):
        super().__init__()
        if embed:
            self.embed_tokens = nn.Embedding(10, 4)
        self.norm = nn.RMSNorm(4)
        self.layers = blocks


def test_missing_mlp_is_named():
    with pytest.raises(ModelError, match=r"block 0 .*no MLP submodule.*input_layernorm, self_attn"):
        find_anatomy(_Fake([_NoMlpBlock()]))


def test_missing_attention_is_named():
    with pytest.raises(ModelError, match=r"block 0 .*no attention submodule.*mlp"):
        find_anatomy(_Fake([_NoAttnBlock()]))


def test_missing_embedding_is_named():
    with pytest.raises(ModelError, match="token embedding"):
        find_anatomy(_Fake([_NoAttnBlock()], embed=False))


def test_missing_or_empty_layers():
    with pytest.raises(ModelError, match="has no `layers`"):
        find_anatomy(nn.Linear(2, 2))
    with pytest.raises(ModelError, match="not a non-empty list"):
        find_anatomy(_Fake([]))


def test_layers_is_the_owned_list_not_a_copy(loaded):
    """qwen2's `model.layers` is a fresh slice (`pipeline_layers`); the anatomy must hold the real list."""
    model = loaded["qwen2"].model
    assert model.layers is not model.layers  # the property copies
    assert find_anatomy(model).layers is model.model.layers


class _SubsetLayers(_Fake):
    @property
    def layers(self):
        return self.blocks[:1]

    def __init__(self):
        super().__init__([])
        del self["layers"]
        self.blocks = [_NoAttnBlock(), _NoAttnBlock()]


def test_layers_copy_of_a_subset_is_an_error():
    with pytest.raises(ModelError, match="cannot find the list that holds the blocks"):
        find_anatomy(_SubsetLayers())
