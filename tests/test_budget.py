"""The memory plan (tracer/core/budget.py): a model's shape read before loading, the bytes its
weights and a trace need, the one-line refusal, and `doctor --model`'s plan."""

import json

import tracer
from tracer import blas
from tracer.cli import run_cli
from tracer.core import budget, schedule
from tracer.errors import ModelError
from tracer.models.shape import ModelShape, read_shape

import mlx.core as mx
import pytest
from cli_helpers import one_error_line
from mlx.utils import tree_flatten

SMALL = ModelShape("llama", layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10,
                   n_params=1000, stored_bytes=500, quantized=True)


def test_plan_by_hand():
    plan = budget.plan_memory(SMALL, n_tokens=3, samples=2, batch_tokens=4, workers=2, packed=True,
                              available=1 << 30, on_cpu=True)
    assert SMALL.kv_per_token == 2 * 2 * 1 * 4 == 16
    weights = 1000 * 4  # float32 on CPU
    recorded = 2 * 3 * (2 * 8 + 2 * 16 + 8) * 4  # samples x tokens x (hidden states, keys/values twice, embeds)
    clean = 3 * 2 * 3 * 8 * 4 + 3 * 16 * 4  # three kinds at every layer, and keys/values, one row
    assert (recorded, clean) == (1344, 768)
    per_token = 4 * (10 * 8 + 4 * 16)  # activations inside a block
    forward = 4 * per_token + 4 * 3 * 10 * 4  # 4 token-rows; at most 4 rows of logits
    assert (per_token, forward) == (576, 2784)
    recording_batch = 1024 * per_token  # schedule.RECORD_TOKENS token-rows while recording
    assert plan.weight_bytes == weights
    assert plan.recording_bytes == recorded + clean == 2112
    assert plan.forward_bytes == max(2 * forward, recording_batch) == 589_824
    assert plan.need == 4000 + 2112 + 589_824 and plan.fits
    kept = budget.plan_memory(SMALL, n_tokens=3, samples=2, batch_tokens=4, keep_quantized=True,
                              available=1 << 30, on_cpu=True)
    assert kept.bytes_per_weight == 0.5 and kept.weight_bytes == 500


def test_batch_follows_memory_where_it_binds():
    # plenty of memory: the device's preferred batch, as before
    assert schedule.batch_limits_for(576, 1536, 49152, 10, 16 << 30)[1] == schedule.CPU_TARGET_TOKENS
    assert schedule.batch_limits_for(576, 1536, 49152, 10, 16 << 30, packed=True)[1] == 768
    assert schedule.batch_limits_for(576, 1536, 49152, 10, 64 << 30, on_cpu=False)[1] == 8192
    # a GPU with 8 GiB free: an eighth of it over GPT-2 XL's activations per token
    per_token = 4 * (10 * 1600 + 4 * 6400)
    assert schedule.batch_limits_for(1600, 6400, 50257, 10, 8 << 30, on_cpu=False)[1] == (1 << 30) // per_token


def test_shape_of_an_mlx_lm_directory(tiny_model_dir, tiny_lm):
    shape = read_shape(str(tiny_model_dir))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads) == (6, 64, 4, 2)
    assert shape.intermediate == config["intermediate_size"] and shape.vocab == config["vocab_size"]
    loaded = sum(v.size for _, v in tree_flatten(tiny_lm.model.parameters()))
    assert shape.n_params == loaded and shape.stored_bytes == 4 * loaded and not shape.quantized


def test_a_hugging_face_id_has_no_plan_before_loading():
    assert read_shape("someone/some-model") is None
    assert budget.check_model_fits("someone/some-model") is None


@pytest.mark.slow
def test_shape_of_the_embedded_gguf():
    shape = read_shape(None)
    assert (shape.arch, shape.layers, shape.hidden, shape.intermediate) == ("llama", 30, 576, 1536)
    assert (shape.heads, shape.kv_heads, shape.head_dim, shape.vocab) == (9, 3, 64, 49152)
    assert shape.n_params == 134_515_008 and shape.quantized


def test_load_refuses_a_model_that_does_not_fit(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(schedule, "free_memory_bytes", lambda: 1 << 20)
    plan = budget.plan_memory(read_shape(str(tiny_model_dir)), available=1 << 20, on_cpu=mx.default_device() == mx.cpu)
    with pytest.raises(ModelError) as err:
        tracer.load(str(tiny_model_dir))
    msg = str(err.value)
    assert msg == plan.refusal(str(tiny_model_dir)) and "\n" not in msg
    need = f"{plan.need / 2**30:.2f}"
    assert msg == (f"{tiny_model_dir} needs ~{need} GiB ({plan.weight_bytes / 2**30:.2f} GiB of weights + "
                   f"{(plan.need - plan.weight_bytes) / 2**30:.2f} GiB for a 10-sample trace of 32 tokens); "
                   "0.00 GiB of RAM is available: use fewer samples (--samples), or a smaller batch, "
                   "or a machine with more memory")


def test_refusal_of_quantized_weights_offers_keep_quantized():
    plan = budget.plan_memory(SMALL, available=100, on_cpu=True)
    assert not plan.fits
    assert f"use --keep-quantized (0.00 GiB of weights; forwards {budget.QUANTIZED_SLOWDOWN} slower on CPU)" \
        in plan.refusal("m.gguf")


@pytest.fixture
def quick_doctor(monkeypatch):
    monkeypatch.setattr(blas, "gemm_gflops", lambda *a, **k: 123.0)
    monkeypatch.setattr(blas, "load_fast_blas", lambda: blas.BlasInfo("openblas", "/x/libopenblas.so.0", True))


def test_doctor_prints_the_plan(quick_doctor, tiny_model_dir, capsys):
    assert run_cli(["doctor", "--model", str(tiny_model_dir), "--no-model", "--samples", "3",
                    "--prompt-tokens", "12"]) == 0
    out = capsys.readouterr().out
    plan = budget.plan_memory(read_shape(str(tiny_model_dir)), n_tokens=12, samples=3)
    lines = out[out.index("memory plan:"):].splitlines()
    assert lines[0] == "memory plan:"
    assert lines[1:] == [f"  {line}" for line in plan.lines()[:-1]] + [lines[-1]]
    assert lines[1].startswith("  shape: llama, 6 layers, hidden 64, ")
    assert lines[-1].startswith(f"  needed: {plan.need / 2**30:.2f} GiB; available (RAM): ")
    assert lines[-1].endswith(": fits") and "model:" not in out


def test_doctor_refuses_in_one_line(quick_doctor, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(schedule, "free_memory_bytes", lambda: 1 << 20)
    code = run_cli(["doctor", "--model", str(tiny_model_dir)])
    out, err = capsys.readouterr()
    msg = one_error_line(code, err)
    assert msg.startswith(f"{tiny_model_dir} needs ~") and "0.00 GiB of RAM is available" in msg
    assert out.rstrip().endswith("does NOT fit") and "model:" not in out  # nothing loaded


def test_shape_of_a_gguf_from_its_metadata(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_token_list([f"t{i}" for i in range(10)])
    rng = np.random.default_rng(0)
    tensors = {"token_embd.weight": (10, 8), "blk.0.ffn_up.weight": (16, 8), "blk.1.ffn_up.weight": (16, 8),
               "output_norm.weight": (8,)}
    for name, dims in tensors.items():
        writer.add_tensor(name, rng.standard_normal(dims).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shape = read_shape(str(path))
    assert shape == ModelShape("llama", layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4,
                               vocab=10, n_params=80 + 128 + 128 + 8, stored_bytes=4 * 344, quantized=False,
                               kept_bytes=4 * 344)
    # a K-quant tensor is kept re-quantized to 8 bits (10 bits a weight with its scale and bias)
    q4k = tmp_path / "k.gguf"
    writer = gguf.GGUFWriter(str(q4k), "llama")
    for add, value in ((writer.add_block_count, 1), (writer.add_embedding_length, 256), (writer.add_head_count, 2)):
        add(value)
    raw = np.zeros((4, 144), np.uint8)  # 4 rows of one 256-weight Q4_K block each
    writer.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    writer.add_tensor("output_norm.weight", np.ones(256, np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    shape = read_shape(str(q4k))
    assert (shape.quantized, shape.n_params, shape.stored_bytes) == (True, 1024 + 256, 4 * 144 + 1024)
    assert shape.kept_bytes == 1024 * 10 // 8 + 1024
    # beside a K-quant, a Q8_0 tensor is re-quantized too (the loader re-quantizes the whole file)
    mixed = tmp_path / "mixed.gguf"
    writer = gguf.GGUFWriter(str(mixed), "llama")
    for add, value in ((writer.add_block_count, 1), (writer.add_embedding_length, 256), (writer.add_head_count, 2)):
        add(value)
    writer.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((4, 8 * 34), np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    assert read_shape(str(mixed)).kept_bytes == 2 * 1024 * 10 // 8
    # a corrupt file has no plan: the loader reports it
    path.write_bytes(path.read_bytes()[:40])
    assert read_shape(str(path)) is None
