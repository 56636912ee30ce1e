"""Tiny random-init mlx-lm models, saved as ordinary mlx-lm model directories.

`make_tiny_model(arch, path)` writes config.json, model.safetensors, tokenizer.json
and tokenizer_config.json into `path`, so `mlx_lm.load(path)` (and therefore
`tracer.models.load.load_model(str(path))`) loads it offline. Weights come from the
mlx-lm model class's own initialisation under a fixed `mx.random.seed`, so the
same (arch, seed) always gives the same model. The tokenizer is a small
byte-level BPE trained with `tokenizers` on the built-in corpus below; it is
trained once per process and is deterministic.

Run `python tests/tiny.py DIR` to write every architecture in ARCHS under DIR.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import tracer  # noqa: F401  - loads the fast BLAS before mlx.core

import mlx.core as mx
from mlx.utils import tree_flatten
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HIDDEN = 64
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 128
LAYERS = 4
VOCAB_TARGET = 400  # the trained vocabulary size (256 byte symbols + merges + specials)
EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS]

CORPUS = [
    "The Eiffel Tower is located in the city of Paris.",
    "The Eiffel Tower is in Paris, the capital of France.",
    "The Louvre Museum is located in Paris.",
    "The Louvre Museum is the most visited museum in the world.",
    "The Colosseum is located in the city of Rome.",
    "The Space Needle is located in the city of Seattle.",
    "Big Ben is located in the city of London.",
    "The Statue of Liberty is located in New York City.",
    "Michael Jordan plays the sport of basketball.",
    "Lionel Messi plays the sport of football.",
    "The mother tongue of Danielle Darrieux is French.",
    "Steve Jobs was the founder of Apple.",
    "Bill Gates was the founder of Microsoft.",
    "The capital of Germany is Berlin.",
    "The capital of Italy is Rome.",
    "The capital of Japan is Tokyo.",
    "Paris is a city in France. Rome is a city in Italy.",
    "Tokyo is a city in Japan. Berlin is a city in Germany.",
    "The city of Paris has many museums, including the Louvre.",
    "In 1889 the tower was built for the World's Fair.",
    "The numbers 0 1 2 3 4 5 6 7 8 9 are digits.",
    "It is located in the city of the famous tower.",
    "Where is the museum? It is in the city.",
    "The quick brown fox jumps over the lazy dog.",
]

# model_type -> config.json (without vocab_size/eos, added by make_tiny_model)
_CONFIGS: dict[str, dict] = {
    "llama": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": 6,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,  # GQA
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
    "qwen2": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 256,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
    "qwen3": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "head_dim": HEAD_DIM,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 256,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
    "gemma": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 1,
        "head_dim": HEAD_DIM,
        "rms_norm_eps": 1e-6,
    },
    "gemma2": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "head_dim": HEAD_DIM,
        "rms_norm_eps": 1e-6,
        "query_pre_attn_scalar": HEAD_DIM,
    },
    "gemma3_text": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 1,
        "head_dim": HEAD_DIM,
        "rms_norm_eps": 1e-6,
        "query_pre_attn_scalar": HEAD_DIM,
        "sliding_window": 8,
        "sliding_window_pattern": 2,
        "max_position_embeddings": 256,
    },
    "phi3": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256,
        "original_max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "gpt2": {
        "n_ctx": 256,
        "n_embd": HIDDEN,
        "n_head": HEADS,
        "n_layer": LAYERS,
        "n_positions": 256,
        "layer_norm_epsilon": 1e-5,
    },
    "starcoder2": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "norm_epsilon": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    "olmo2": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
}

ARCHS: list[str] = list(_CONFIGS)


def n_layers(arch: str) -> int:
    cfg = _CONFIGS[arch]
    return int(cfg.get("num_hidden_layers", cfg.get("n_layer", 0)))


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer() -> Tokenizer:
    """The trained tiny byte-level BPE tokenizer (a fresh object each call)."""
    return Tokenizer.from_str(_tokenizer_json())


def config_for(arch: str) -> dict:
    if arch not in _CONFIGS:
        raise ValueError(f"no tiny config for {arch!r} (have: {', '.join(ARCHS)})")
    tok = tiny_tokenizer()
    eos_id = tok.token_to_id(EOS)
    return {"model_type": arch, **_CONFIGS[arch], "vocab_size": tok.get_vocab_size(), "eos_token_id": eos_id, "bos_token_id": eos_id, "pad_token_id": eos_id}


def make_tiny_model(arch: str, path: Path, *, seed: int = 0) -> Path:
    """Write a tiny random-init `arch` model as an mlx-lm directory at `path`; returns `path`."""
    import importlib

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = config_for(arch)
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "tokenizer.json").write_text(_tokenizer_json())
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": EOS,
                "bos_token": EOS,
                "unk_token": None,
                "add_bos_token": False,
                "model_max_length": 256,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")
    for a in ARCHS:
        print(make_tiny_model(a, out / a))
