"""GGUF models of every supported architecture and tensor type, written with llama.cpp's
`gguf.GGUFWriter` from tiny random mlx-lm models (tests/gguf_models.py): the loaded model's
logits equal the mlx-lm model's, and every dequantized weight equals llama.cpp's reference
dequantizer's float32 result, bit for bit."""

from tracer.errors import ModelError
from tracer.models.gguf import ARCHS, read_gguf
from tracer.models.gguf_header import readable_types
from tracer.models.load import load_model

import gguf
import mlx.core as mx
import numpy as np
import pytest
import tiny
from gguf import GGMLQuantizationType as Q
from gguf_models import TINY_ARCH, gguf_name, write_tiny_gguf
from mlx.utils import tree_flatten

PROMPT = "The Eiffel Tower is located in the city of Paris."


def _logits(model, ids) -> np.ndarray:
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_each_architecture_matches_mlx_lm(tmp_path, arch):
    path = tmp_path / f"{arch}.gguf"
    reference = write_tiny_gguf(arch, path)
    loaded = load_model(str(path))
    assert loaded.source == "gguf" and loaded.n_layers == tiny.n_layers(TINY_ARCH[arch])
    ids = loaded.tokenizer.encode(PROMPT).ids
    assert ids == tiny.tiny_tokenizer().encode(PROMPT).ids  # the tokenizer from the GGUF metadata
    ours, expected = _logits(loaded.model, ids), _logits(reference, ids)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=2e-5)


def test_an_unknown_architecture_is_one_clear_error(tmp_path):
    path = tmp_path / "x.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(ModelError, match=r"^unsupported GGUF architecture 'mamba' \(supported: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, gpt2\)$"):
        load_model(str(path))


# a llama whose every matrix row is a whole number of 256-weight blocks (K- and I-quants)
_WIDE = {**tiny.config_for("llama"), "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2}
QUANT_TYPES = sorted((Q(t) for t in readable_types() if Q(t) not in (Q.F32,)), key=lambda t: t.name)


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_every_tensor_type_dequantizes_as_llama_cpp_does(tmp_path, qtype):
    path = tmp_path / f"{qtype.name}.gguf"
    write_tiny_gguf("llama", path, qtype=qtype, config=_WIDE, seed=3)
    gfile = read_gguf(str(path))
    assert qtype.name in gfile.type_names()
    reference = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in gfile.tensors}
    loaded = load_model(str(path))
    params = dict(tree_flatten(loaded.model.parameters()))
    for name, value in params.items():
        ours = np.array(value)
        assert ours.dtype == np.float32
        assert np.array_equal(ours.ravel(), np.asarray(reference[gguf_name("llama", name)], np.float32).ravel(), equal_nan=True), name


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K, Q.Q6_K], ids=lambda t: t.name)
def test_keep_quantized(tmp_path, qtype):
    """--keep-quantized: Q8_0 is kept packed by MLX's loader and exact; K-quants are
    re-quantized to 8 bits, close to the exact model and labelled approximate."""
    path = tmp_path / f"{qtype.name}.gguf"
    write_tiny_gguf("llama", path, qtype=qtype, config=_WIDE, seed=3)
    exact, kept = load_model(str(path)), load_model(str(path), keep_quantized=True)
    assert kept.quantized and not exact.quantized
    assert kept.requantized == (qtype != Q.Q8_0)
    assert ("re-quantized to 8 bits (approximate)" in kept.summary()) == kept.requantized
    exact_params = dict(tree_flatten(exact.model.parameters()))
    layer = kept.model.model.layers[0].mlp.down_proj
    w = np.array(mx.dequantize(layer.weight, layer.scales.astype(mx.float32), layer.biases.astype(mx.float32),
                               group_size=layer.group_size, bits=layer.bits))
    true = np.array(exact_params["model.layers.0.mlp.down_proj.weight"])
    groups = true.reshape(-1, 32)
    step = (groups.max(axis=1) - groups.min(axis=1)) / 255  # an 8-bit affine level
    error = np.abs(w - true).reshape(-1, 32).max(axis=1)
    if kept.requantized:
        assert layer.bits == 8 and np.all(error <= step + 1e-6)  # within one 8-bit level of its group
    else:
        assert np.array_equal(w, true)


def _sentencepiece_meta():
    """A SentencePiece BPE trained on the tiny corpus, as GGUF tokenizer metadata (llama.cpp's
    token types: 1 normal, 2 unknown, 3 control, 6 byte)."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny.CORPUS * 3), model_writer=buf, vocab_size=420, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)], "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.unknown_token_id": 0}
    return sp, meta


@pytest.mark.parametrize("text", ["The Eiffel Tower is located in the city of Paris.", "Zürich 12345 ünïcödé  two  spaces",
                                  "It is in the city.", " leading space, emoji \U0001f600 and tab\tend"])
def test_sentencepiece_vocabulary_tokenizes_as_sentencepiece(text):
    from tracer.models.gguf import build_tokenizer

    sp, meta = _sentencepiece_meta()
    tok = build_tokenizer(meta)
    ids = tok.encode(text).ids
    assert ids == [1, *sp.encode(text)]  # BOS by default for SentencePiece, as llama.cpp does
    assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids[1:])


@pytest.mark.parametrize("pre,pieces", [
    ("gpt-2", ["Hello", "Ġworld", "'s", "Ġ12345", "!!"]),
    ("llama-bpe", ["Hello", "Ġworld", "'s", "Ġ", "123", "45", "!!"]),
    ("qwen2", ["Hello", "Ġworld", "'s", "Ġ", "1", "2", "3", "4", "5", "!!"]),
    ("smollm", ["Hello", "Ġworld", "'s", "Ġ", "1", "2", "3", "4", "5", "!!"]),
])
def test_bpe_pre_tokenizer_follows_the_file(pre, pieces):
    """The split rules of GPT-2, Llama 3 (digits in threes) and Qwen2/SmolLM (single digits)."""
    from tracer.models.gguf import build_tokenizer

    vocab = tiny.tiny_tokenizer().get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = ["Ġ t"] if "Ġt" in vocab else []
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.pre": pre}
    tok = build_tokenizer(meta)
    assert [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("Hello world's 12345!!")] == pieces


def test_a_merge_outside_the_vocabulary_is_one_model_error():
    from tracer.models.gguf import build_tokenizer

    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": ["a b"]}
    with pytest.raises(ModelError, match=r"^GGUF tokenizer: merge 'a b' is not two tokens of the vocabulary$"):
        build_tokenizer(meta)


def test_an_unknown_pre_tokenizer_is_refused():
    from tracer.models.gguf import build_tokenizer

    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"], "tokenizer.ggml.merges": ["a b"],
            "tokenizer.ggml.pre": "falcon"}
    with pytest.raises(ModelError, match=r"^unsupported GGUF pre-tokenizer 'falcon' \(supported: default, gpt-2, smollm, llama-bpe, llama3, qwen2\)$"):
        build_tokenizer(meta)


def test_llama3_rope_frequency_factors(tmp_path):
    """Llama 3.x GGUF files carry their RoPE scaling as a `rope_freqs` tensor: the loaded
    model equals mlx-lm's Llama 3 RoPE model (and differs from the unscaled one)."""
    config = {**tiny.config_for("llama"), "rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}}
    path = tmp_path / "llama3.gguf"
    reference = write_tiny_gguf("llama", path, config=config)
    assert "rope_freqs.weight" in {t.name for t in read_gguf(str(path)).tensors}
    loaded = load_model(str(path))
    ids = loaded.tokenizer.encode(PROMPT * 3).ids
    np.testing.assert_allclose(_logits(loaded.model, ids), _logits(reference, ids), rtol=1e-4, atol=2e-5)
    unscaled = write_tiny_gguf("llama", tmp_path / "plain.gguf", config={**config, "rope_scaling": None})
    assert np.abs(_logits(unscaled, ids) - _logits(reference, ids)).max() > 1e-3
