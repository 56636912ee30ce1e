"""Model loading: the embedded SmolLM2 (dequantized and kept quantized), its
tokenizer, mlx-lm directories (float16 and quantized), and import hygiene."""

import json
import subprocess
import sys

from tracer.models.anatomy import find_anatomy
from tracer.models.load import DEFAULT_MODEL, embedded_model_path, load_model

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

EIFFEL = "The Eiffel Tower is located in the city of"
EIFFEL_IDS = [504, 414, 46682, 18669, 314, 3807, 281, 260, 2240, 282]
EIFFEL_TOKENS = ["The", "ĠE", "iffel", "ĠTower", "Ġis", "Ġlocated", "Ġin", "Ġthe", "Ġcity", "Ġof"]
EIFFEL_OFFSETS = [(0, 3), (3, 5), (5, 10), (10, 16), (16, 19), (19, 27), (27, 30), (30, 34), (34, 39), (39, 42)]
P_PARIS = 0.7016  # measured on the exactly dequantized float32 model (0.6996 with float16-rounded weights)


def next_token_probs(lm, text: str) -> mx.array:
    ids = lm.tokenizer.encode(text).ids
    logits = lm.model(mx.array([ids]))
    return mx.softmax(logits[0, -1].astype(mx.float32))


def top1(lm, text: str) -> tuple[str, float]:
    p = next_token_probs(lm, text)
    i = int(mx.argmax(p).item())
    return lm.tokenizer.decode([i]), float(p[i].item())


# --- the embedded model ------------------------------------------------------


def test_embedded_model_predicts_paris(embedded_model):
    word, p = top1(embedded_model, EIFFEL)
    assert word == " Paris"
    assert p == pytest.approx(P_PARIS, abs=5e-4)


def test_embedded_model_is_float32_llama(embedded_model):
    lm = embedded_model
    dtypes = {v.dtype for _, v in tree_flatten(lm.model.parameters())}
    assert dtypes == {mx.float32}
    assert not lm.quantized
    assert not any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in lm.model.named_modules())
    assert lm.source == "embedded"
    assert lm.n_layers == 30
    anatomy = find_anatomy(lm.model)
    assert anatomy.hidden_size == 576
    assert lm.tokenizer.get_vocab_size() == 49152
    assert lm.summary() == "SmolLM2-135M-Instruct (embedded): 30 layers, hidden 576, vocab 49152, float32"


def test_default_model_name_is_the_embedded_model():
    assert embedded_model_path().endswith(".gguf")
    lm = load_model(DEFAULT_MODEL, keep_quantized=True)
    assert lm.source == "embedded" and lm.name == "SmolLM2-135M-Instruct"


def test_keep_quantized_same_prediction(embedded_model):
    q = load_model(keep_quantized=True)
    assert q.quantized
    n_qlinear = sum(isinstance(m, nn.QuantizedLinear) for _, m in q.model.named_modules())
    assert n_qlinear == 30 * 7  # q, k, v, o, gate, up, down in each block
    assert "quantized" in q.summary()
    assert find_anatomy(q.model).hidden_size == 576
    word, p = top1(q, EIFFEL)
    assert word == " Paris"
    _, p_deq = top1(embedded_model, EIFFEL)
    assert p == pytest.approx(p_deq, abs=0.02)


# --- the embedded tokenizer --------------------------------------------------


def test_eiffel_tokens_and_offsets(embedded_model):
    enc = embedded_model.tokenizer.encode(EIFFEL)
    assert enc.ids == EIFFEL_IDS  # no BOS for SmolLM2
    assert enc.tokens == EIFFEL_TOKENS
    assert enc.offsets == EIFFEL_OFFSETS
    assert [EIFFEL[a:b] for a, b in enc.offsets] == ["The", " E", "iffel", " Tower", " is", " located", " in", " the", " city", " of"]
    assert embedded_model.tokenizer.decode(enc.ids) == EIFFEL


def test_digits_split_singly(embedded_model):
    enc = embedded_model.tokenizer.encode("In 1889 there were 12345 people")
    assert enc.tokens == ["In", "Ġ", "1", "8", "8", "9", "Ġthere", "Ġwere", "Ġ", "1", "2", "3", "4", "5", "Ġpeople"]


def test_special_tokens_are_single(embedded_model):
    tok = embedded_model.tokenizer
    assert tok.token_to_id("<|endoftext|>") == 0
    assert tok.token_to_id("<|im_start|>") == 1
    assert tok.encode("<|im_start|>user").tokens[0] == "<|im_start|>"


# --- mlx-lm directories ------------------------------------------------------


def test_tiny_mlx_lm_dir_loads(tiny_model_dir):
    tiny_lm = load_model(str(tiny_model_dir))  # its own copy: the session's tiny_lm may carry other tests' taps
    assert tiny_lm.source == "mlx-lm"
    assert tiny_lm.name == tiny_model_dir.name
    assert tiny_lm.n_layers == 6
    assert {v.dtype for _, v in tree_flatten(tiny_lm.model.parameters())} == {mx.float32}
    enc = tiny_lm.tokenizer.encode(" Paris")
    assert enc.tokens == ["ĠParis"]
    # same weights as written: the tiny factory is deterministic
    saved = mx.load(str(tiny_model_dir / "model.safetensors"))
    params = dict(tree_flatten(tiny_lm.model.parameters()))
    assert set(saved) == set(params)
    assert all(mx.array_equal(saved[k], params[k]).item() for k in saved)


def test_half_precision_dir_is_cast_to_float32(tiny_model_dir, tmp_path):
    d = tmp_path / "fp16"
    d.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (d / name).write_bytes((tiny_model_dir / name).read_bytes())
    weights = mx.load(str(tiny_model_dir / "model.safetensors"))
    mx.save_safetensors(str(d / "model.safetensors"), {k: v.astype(mx.float16) for k, v in weights.items()})
    lm = load_model(str(d))
    params = dict(tree_flatten(lm.model.parameters()))
    assert {v.dtype for v in params.values()} == {mx.float32}
    k = "model.layers.0.mlp.up_proj.weight"
    assert mx.array_equal(params[k], weights[k].astype(mx.float16).astype(mx.float32)).item()


@pytest.fixture(scope="module")
def quantized_tiny_dir(tiny_model_dir, tmp_path_factory):
    """The tiny llama, 4-bit quantized and saved the way mlx-lm saves quantized models."""
    d = tmp_path_factory.mktemp("tiny-q4")
    lm = load_model(str(tiny_model_dir))
    nn.quantize(lm.model, group_size=32, bits=4)
    mx.save_safetensors(str(d / "model.safetensors"), dict(tree_flatten(lm.model.parameters())))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["quantization"] = {"group_size": 32, "bits": 4}
    (d / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).write_bytes((tiny_model_dir / name).read_bytes())
    return d


def test_quantized_dir_is_dequantized_on_cpu(quantized_tiny_dir, tiny_lm):
    lm = load_model(str(quantized_tiny_dir))
    assert not lm.quantized
    assert {v.dtype for _, v in tree_flatten(lm.model.parameters())} == {mx.float32}
    kept = load_model(str(quantized_tiny_dir), keep_quantized=True)
    assert kept.quantized
    assert sum(isinstance(m, nn.QuantizedLinear) for _, m in kept.model.named_modules()) == 6 * 7 + 1  # + lm_head
    ids = mx.array([tiny_lm.tokenizer.encode(EIFFEL).ids])
    a, b, ref = lm.model(ids), kept.model(ids), tiny_lm.model(ids)
    assert mx.allclose(a, b, atol=1e-3).item()  # dequantized == quantized arithmetic
    assert not mx.allclose(a, ref, atol=1e-4).item()  # 4-bit rounding did change the weights


# --- import hygiene ----------------------------------------------------------


def test_import_tracer_does_not_load_textual():
    code = (
        "import sys, tracer, tracer.models.load, tracer.models.anatomy, tracer.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui', 'plotext', 'textual_plotext'))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
