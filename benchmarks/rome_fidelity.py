"""Fidelity: our causal-tracing grids against ROME's own code, on the same float32 weights.

Runs ROME's `experiments/causal_trace.py` (kmeng01/rome, commit 0874014; imported from a
checkout, not copied) on a PyTorch/transformers LlamaForCausalLM built from the very weights
our engine traces (the embedded SmolLM2-135M-Instruct GGUF, dequantized exactly to float32),
and compares cell by cell with `tracer.trace` (issue #12 item 3):

  1. noise mode: ROME's `calculate_hidden_flow` for kinds None/"mlp"/"attn" (absolute noise
     std 0.35, 10 samples, window 10, RandomState(1) draws) against ours with noise "0.35";
  2. substitution mode: ROME's `trace_important_states`/`trace_important_window` on a batch
     whose row 0 is the clean prompt and rows 1..N the corrupted prompt (tokens_to_mix=None,
     so nothing is noised) against ours with corrupted_prompt=...;
  3. the time of ROME's full noise trace (three kinds) and of ours, interleaved if repeated.

Setup: a separate environment holding both MLX (the project) and torch + transformers. Torch
is not a project dependency; the PyPI wheel for Linux pulls its CUDA libraries (~5 GB in all),
though everything here runs on the CPU:

    uv venv /work/rome-env --python 3.11
    uv export --locked --no-dev --no-hashes --no-emit-project > /tmp/rome-req.txt
    uv pip install --python /work/rome-env/bin/python -r /tmp/rome-req.txt torch
    uv pip install --python /work/rome-env/bin/python --no-deps -e .
    # a checkout of kmeng01/rome (commit 0874014) at /tmp/rome, e.g. from a local mirror:
    #   mkdir -p /tmp/rome && git --git-dir=MIRROR archive HEAD | tar -x -C /tmp/rome

Run (from the repository root):

    /work/rome-env/bin/python benchmarks/rome_fidelity.py --rome /tmp/rome [--repeat 2] [--json out.json]
    # where differences come from, at token rows 2 and 9: adds the tests' plain-MLX oracle
    /work/rome-env/bin/python benchmarks/rome_fidelity.py --rome /tmp/rome --only-attribution --attribution-rows 2,9

The numbers measured with it, and what they mean, are in docs/fidelity.md.

What is stubbed: ROME's module imports `datasets`, `matplotlib`, `dsets`, `rome.tok_dataset`,
`util.globals` and `util.runningstats` at the top but the functions called here use none of
them; they are replaced by empty modules in sys.modules when not importable (ROME's own
packages always, since `util/globals.py` reads globals.yml from the working directory).
`util/nethook.py` is ROME's real file. Adapters, not copies: `layername` is replaced in the
loaded module by the HF llama names; `make_inputs` gets device "cpu" as its default; the
tokenizer is a small wrapper around our `tokenizers.Tokenizer` with the methods ROME calls;
`ModelAndTokenizer.num_layers` is set by hand (its regex knows only GPT-2/J/NeoX names).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import sys
import time
import types

import tracer  # first: fast BLAS before mlx.core
from tracer.models.load import load_model

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
CORRUPTED = "The Louvre Museum is located in the city of"
NOISE = 0.35
SAMPLES = 10
WINDOW = 10
KINDS = ("hidden", "mlp", "attn")
ROME_KIND = {"hidden": None, "mlp": "mlp", "attn": "attn"}


# ---------------------------------------------------------------- ROME's code, imported


def import_rome(path: str):
    """ROME's experiments/causal_trace.py as a module, with unused imports stubbed."""
    stubbed = []

    def stub(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        stubbed.append(name)
        return mod

    def unused(*_a, **_k):
        raise RuntimeError("stubbed: not needed by the fidelity check")

    for name, attrs in [("datasets", {"load_dataset": unused}), ("matplotlib", {}),
                        ("matplotlib.pyplot", {}), ("tqdm", {"tqdm": unused})]:
        try:
            importlib.import_module(name)
        except ImportError:
            stub(name, **attrs)
    if "matplotlib.pyplot" in stubbed:
        sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    # ROME's own packages: their __init__ files pull in unrelated code; keep only nethook real.
    util = stub("util")
    util.__path__ = [f"{path}/util"]
    stub("util.globals", DATA_DIR=None)
    stub("util.runningstats", Covariance=unused, tally=unused)
    stub("dsets", KnownsDataset=unused)
    stub("rome", __path__=[])
    stub("rome.tok_dataset", TokenizedDataset=unused, dict_to_=unused,
         flatten_masked_batch=unused, length_collation=unused)
    spec = importlib.util.spec_from_file_location("rome_causal_trace", f"{path}/experiments/causal_trace.py")
    ct = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ct)

    def llama_layername(model, num, kind=None):  # ROME's layername, for HF llama module names
        if kind == "embed":
            return "model.embed_tokens"
        suffix = {None: "", "mlp": ".mlp", "attn": ".self_attn"}[kind]
        return f"model.layers.{num}{suffix}"

    ct.layername = llama_layername
    ct.make_inputs.__defaults__ = ("cpu",)  # its default device is "cuda"
    return ct, stubbed


class RomeTokenizer:
    """The methods of a transformers tokenizer that ROME's make_inputs/decode_tokens use,
    on our `tokenizers.Tokenizer` (so both sides tokenize identically)."""

    def __init__(self, tok):
        self.tok = tok
        added = tok.get_added_tokens_decoder()
        self.all_special_ids = [i for i, t in added.items() if t.special]
        self.all_special_tokens = [added[i].content for i in self.all_special_ids]

    def encode(self, text):
        return list(self.tok.encode(text).ids)

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


# ---------------------------------------------------------------- the same weights in torch


def mlx_weights(lm) -> dict[str, np.ndarray]:
    """Our float32 parameters (the mlx-lm llama model's), by HF name (tap wrappers'
    `.inner.` stripped, should there be any)."""
    out = {}
    for name, value in tree_flatten(lm.parameters()):
        name = name.replace(".inner.", ".").replace(".inner", "")
        out[name] = np.array(value.astype(mx.float32), copy=True)
    return out


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's convert permutation of Q/K rows (interleaved RoPE -> rotate_half):
    convert does w.reshape(n_head, 2, hd//2, dim).swapaxes(1, 2).reshape(w.shape)."""
    rows, dim = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, dim).swapaxes(1, 2).reshape(rows, dim)


def build_hf(lm, torch, transformers):
    """transformers' LlamaForCausalLM, float32, eager attention, with our weights."""
    a = lm.args
    cfg = transformers.LlamaConfig(
        vocab_size=a.vocab_size, hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
        num_hidden_layers=a.num_hidden_layers, num_attention_heads=a.num_attention_heads,
        num_key_value_heads=a.num_key_value_heads, head_dim=a.hidden_size // a.num_attention_heads,
        rms_norm_eps=a.rms_norm_eps, max_position_embeddings=a.max_position_embeddings,
        rope_theta=a.rope_theta, rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta},
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, hidden_act="silu",
        torch_dtype="float32",
    )
    cfg._attn_implementation = "eager"
    hf = transformers.LlamaForCausalLM(cfg).to(torch.float32).eval()
    w = mlx_weights(lm)
    state = {}
    for name, value in w.items():
        if name.endswith("self_attn.q_proj.weight"):
            value = unpermute(value, a.num_attention_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            value = unpermute(value, a.num_key_value_heads)
        state[name] = torch.from_numpy(value)
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        raise SystemExit(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf, cfg


def logits_check(lm, hf, tok, torch, prompts) -> dict:
    """Plain forwards, every position's logits: ours (MLX) against HF's."""
    out = {}
    for p in prompts:
        ids = tok.encode(p)
        ours = np.array(lm(mx.array([ids])).astype(mx.float32))[0]
        with torch.no_grad():
            theirs = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
        po = np.exp(ours[-1] - ours[-1].max()); po /= po.sum()
        pt = np.exp(theirs[-1] - theirs[-1].max()); pt /= pt.sum()
        a = int(po.argmax())
        # the same float32 logits (ours), P(answer) by three softmaxes: exact (float64),
        # torch's float32 (ROME's score) and MLX's float32 (the engine's score)
        l64 = ours[-1].astype(np.float64)
        e64 = np.exp(l64 - l64.max())
        exact = float(e64[a] / e64.sum())
        softmaxes = {"float64": exact,
                     "torch_f32": float(torch.softmax(torch.from_numpy(ours[-1].copy()), dim=0)[a]),
                     "mx_f32": float(mx.softmax(mx.array(ours[-1]), axis=-1)[a])}
        out[p] = {"max_abs_logit_diff": float(np.abs(ours - theirs).max()),
                  "p_answer_by_softmax": softmaxes,
                  "softmax_rel_err": {k: v / exact - 1 for k, v in softmaxes.items() if k != "float64"},
                  "argmax": [a, int(pt.argmax())], "p_argmax": [float(po[a]), float(pt[a])],
                  "max_abs_logit": float(np.abs(ours).max()),
                  "max_abs_lastpos_prob_diff": float(np.abs(po - pt).max())}
    return out


# ---------------------------------------------------------------- the two traces


def rome_noise(ct, mt):
    res = {}
    for kind in KINDS:
        res[kind] = ct.calculate_hidden_flow(mt, PROMPT, SUBJECT, samples=SAMPLES, noise=float(NOISE),
                                             window=WINDOW, kind=ROME_KIND[kind])
    return res


def ours_noise(model):
    return tracer.trace(model, PROMPT, SUBJECT, kinds=KINDS, samples=SAMPLES, window=WINDOW,
                        noise=str(NOISE), seed=1, positions="all")


def rome_substitution(ct, mt, torch, rows: int):
    inp = ct.make_inputs(mt.tokenizer, [PROMPT] + [CORRUPTED] * rows)
    with torch.no_grad():
        answer_t, base = [d[0] for d in ct.predict_from_input(mt.model, inp)]
    [answer] = ct.decode_tokens(mt.tokenizer, [answer_t])
    e_range = ct.find_token_range(mt.tokenizer, inp["input_ids"][0], SUBJECT)
    # tokens_to_mix=None: the embedding hook leaves every row as it is (noise is unused).
    low = ct.trace_with_patch(mt.model, inp, [], answer_t, None, noise=0.0).item()
    grids = {}
    for kind in KINDS:
        if kind == "hidden":
            g = ct.trace_important_states(mt.model, mt.num_layers, inp, None, answer_t, noise=0.0)
        else:
            g = ct.trace_important_window(mt.model, mt.num_layers, inp, None, answer_t, kind=kind,
                                          window=WINDOW, noise=0.0)
        grids[kind] = g.detach().cpu().numpy().astype(np.float64)
    return dict(grids=grids, low_score=low, high_score=float(base), answer=answer, subject_range=e_range)


def ours_substitution(model):
    return tracer.trace(model, PROMPT, SUBJECT, corrupted_prompt=CORRUPTED, kinds=KINDS, samples=SAMPLES,
                        window=WINDOW, seed=1, positions="all")


def compare(rome_grids, rome_low, rome_high, rome_answer, rome_range, ours) -> dict:
    rows = {}
    for kind in KINDS:
        r = np.asarray(rome_grids[kind], np.float64)
        o = ours.grid(kind)
        if r.shape != o.shape:
            rows[kind] = {"shape_rome": list(r.shape), "shape_ours": list(o.shape)}
            continue
        d = np.abs(r - o)
        t, l = np.unravel_index(int(d.argmax()), d.shape)
        rows[kind] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                      "at": [int(t), int(l)], "rome_there": float(r[t, l]), "ours_there": float(o[t, l]),
                      "max_rel_diff": float((d / np.maximum(np.abs(r), 1e-30)).max()),
                      "grid_max": float(r.max())}
    raw = {k: {"rome": np.asarray(rome_grids[k], np.float64).tolist(), "ours": ours.grid(k).tolist()}
           for k in KINDS}
    return raw, {
        "grids": rows,
        "high_score": {"rome": rome_high, "ours": ours.clean_prob, "abs_diff": abs(rome_high - ours.clean_prob)},
        "low_score": {"rome": rome_low, "ours": ours.corrupted_prob, "abs_diff": abs(rome_low - ours.corrupted_prob)},
        "answer": {"rome": rome_answer, "ours": ours.target_text, "equal": rome_answer == ours.target_text},
        "subject_range": {"rome": list(rome_range), "ours": list(ours.subject_range)},
    }


def attribution(ct, mt, torch, plain, model, rows, ours_full=None) -> dict:
    """Where the differences come from, at a few token rows (noise mode): a third trace, the
    tests' oracle (tests/oracle.py: one plain mlx-lm forward per cell, no batching, no reuse,
    no fast paths), splits |ROME - ours| into torch-vs-MLX rounding (ROME - oracle) and the
    engine's own rounding (oracle - ours). ROME's side: trace_important_states/window with
    token_range=[t]; ours: the full grid's row t when given, else a trace with positions=[t]."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from oracle import oracle_trace

    inp = ct.make_inputs(mt.tokenizer, [PROMPT] * (SAMPLES + 1))
    with torch.no_grad():
        answer_t, base = [d[0] for d in ct.predict_from_input(mt.model, inp)]
    e_range = ct.find_token_range(mt.tokenizer, inp["input_ids"][0], SUBJECT)
    low = ct.trace_with_patch(mt.model, inp, [], answer_t, e_range, noise=float(NOISE)).item()
    out = {"rows": {}}
    for t in rows:
        og, p_clean, p_corr, target = oracle_trace(plain, PROMPT, SUBJECT, kinds=KINDS, samples=SAMPLES,
                                                   noise_std=NOISE, window=WINDOW, seed=1, positions=[t])
        assert target == int(answer_t)
        if ours_full is None:
            res = tracer.trace(model, PROMPT, SUBJECT, kinds=KINDS, samples=SAMPLES, window=WINDOW,
                               noise=str(NOISE), seed=1, positions=[t])
            ours_rows = {k: res.grid(k)[0] for k in KINDS}
        else:
            ours_rows = {k: ours_full.grid(k)[t] for k in KINDS}
        row = {}
        for kind in KINDS:
            if kind == "hidden":
                g = ct.trace_important_states(mt.model, mt.num_layers, inp, e_range, answer_t,
                                              noise=float(NOISE), token_range=[t])
            else:
                g = ct.trace_important_window(mt.model, mt.num_layers, inp, e_range, answer_t, kind=kind,
                                              window=WINDOW, noise=float(NOISE), token_range=[t])
            r = g.detach().cpu().numpy().astype(np.float64)[0]
            o = og[kind]["prob"][0]
            u = np.asarray(ours_rows[kind], np.float64)
            row[kind] = {"rome_vs_oracle": float(np.abs(r - o).max()), "oracle_vs_ours": float(np.abs(o - u).max()),
                         "rome_vs_ours": float(np.abs(r - u).max())}
        out["rows"][t] = row
        out["high_score"] = {"rome": float(base), "oracle": p_clean}
        out["low_score"] = {"rome": low, "oracle": p_corr}
    return out


def reuse(args) -> None:
    """Our traces against ROME's numbers saved by an earlier run (its raw grids and baselines)."""
    with open(args.reuse) as f:
        saved = json.load(f)
    model = tracer.load()
    report = {"reused": args.reuse, "versions_saved": saved.get("versions")}
    for mode, run in (("noise", ours_noise), ("substitution", ours_substitution)):
        if mode not in saved.get("raw", {}):
            continue
        s = saved[mode]
        start = time.perf_counter()
        ours = run(model)
        seconds = time.perf_counter() - start
        grids = {k: saved["raw"][mode][k]["rome"] for k in KINDS}
        _, report[mode] = compare(grids, s["low_score"]["rome"], s["high_score"]["rome"], s["answer"]["rome"],
                                  s["subject_range"]["rome"], ours)
        report[mode]["seconds_ours"] = seconds
        print(f"{mode} mode:", json.dumps(report[mode], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rome", help="a checkout of kmeng01/rome (commit 0874014)")
    ap.add_argument("--reuse", metavar="JSON",
                    help="compare against ROME's grids and baselines saved by an earlier run's --json "
                    "(ROME's side is not rerun; no torch needed)")
    ap.add_argument("--repeat", type=int, default=1, help="timed noise traces per side, interleaved")
    ap.add_argument("--sub-rows", type=int, default=1,
                    help="corrupted rows in ROME's substitution batch (identical rows: the mean is one row)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch's CPU threads (on this 2-core, shared VM, 2 made HF's forward 4x slower)")
    ap.add_argument("--skip-substitution", action="store_true")
    ap.add_argument("--attribution-rows", default="",
                    help="token rows (e.g. 2,9) for the three-way split against the tests' plain-MLX oracle")
    ap.add_argument("--only-attribution", action="store_true", help="skip the full grids (and the timing)")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()
    if args.reuse:
        return reuse(args)
    if not args.rome:
        ap.error("--rome PATH is required (or --reuse JSON)")

    import torch
    import transformers

    torch.set_num_threads(args.torch_threads)
    ct, stubbed = import_rome(args.rome)
    # A plain copy for the weights and the logits check: tracer.load()'s copy gets taps
    # (e.g. its final norm sees only the last position, so its logits are the last row's).
    plain = load_model()
    model = tracer.load()
    tok = RomeTokenizer(model.tokenizer)
    hf, cfg = build_hf(plain.model, torch, transformers)
    report = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "mlx": mx.__version__, "numpy": np.__version__},
        "torch_threads": torch.get_num_threads(), "stubbed_modules": stubbed,
        "setting": {"prompt": PROMPT, "subject": SUBJECT, "corrupted_prompt": CORRUPTED, "noise": NOISE,
                    "samples": SAMPLES, "window": WINDOW, "seed": 1, "positions": "all", "dtype": "float32"},
    }
    n_tokens = [len(tok.encode(p)) for p in (PROMPT, CORRUPTED)]
    if n_tokens[0] != n_tokens[1]:
        raise SystemExit(f"the corrupted prompt has {n_tokens[1]} tokens, the clean one {n_tokens[0]}")
    report["logits"] = logits_check(plain.model, hf, tok, torch, [PROMPT, CORRUPTED])
    print("HF vs MLX logits:", json.dumps(report["logits"], indent=1), flush=True)

    mt = ct.ModelAndTokenizer(model=hf, tokenizer=tok)
    mt.num_layers = cfg.num_hidden_layers

    # Noise mode, timed; with --repeat the two sides alternate (and swap who goes first).
    times = {"rome": [], "ours": []}
    rome_res = ours_res = None
    report["raw"] = {}
    for i in range(0 if args.only_attribution else args.repeat):
        order = ("rome", "ours") if i % 2 == 0 else ("ours", "rome")
        for side in order:
            start = time.perf_counter()
            if side == "rome":
                rome_res = rome_noise(ct, mt)
            else:
                ours_res = ours_noise(model)
            times[side].append(time.perf_counter() - start)
            print(f"noise trace, {side}: {times[side][-1]:.1f} s", flush=True)
    rows = [int(x) for x in args.attribution_rows.split(",") if x.strip()]
    if args.only_attribution:
        report["attribution"] = attribution(ct, mt, torch, plain, model, rows)
        print("attribution:", json.dumps(report["attribution"], indent=1), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        return
    r0 = rome_res["hidden"]
    for kind in KINDS[1:]:  # every kind's call recomputes the same baselines
        assert rome_res[kind]["low_score"] == r0["low_score"] and rome_res[kind]["high_score"] == r0["high_score"]
    report["raw"]["noise"], report["noise"] = compare({k: rome_res[k]["scores"].numpy() for k in KINDS}, r0["low_score"],
                              float(r0["high_score"]), r0["answer"], r0["subject_range"], ours_res)
    report["noise"]["noise_std_ours"] = ours_res.noise_std
    report["times_s"] = {side: {"runs": t, "median": statistics.median(t)} for side, t in times.items()}
    print("noise mode:", json.dumps(report["noise"], indent=1), flush=True)

    if not args.skip_substitution:
        start = time.perf_counter()
        rs = rome_substitution(ct, mt, torch, args.sub_rows)
        t_rome = time.perf_counter() - start
        start = time.perf_counter()
        os_ = ours_substitution(model)
        t_ours = time.perf_counter() - start
        report["raw"]["substitution"], report["substitution"] = compare(rs["grids"], rs["low_score"], rs["high_score"], rs["answer"],
                                         rs["subject_range"], os_)
        report["substitution"]["rows"] = args.sub_rows
        report["substitution"]["corruption_ours"] = os_.corruption
        report["substitution"]["times_s"] = {"rome": t_rome, "ours": t_ours}
        print("substitution mode:", json.dumps(report["substitution"], indent=1), flush=True)

    if rows:
        report["attribution"] = attribution(ct, mt, torch, plain, model, rows, ours_res)
        print("attribution:", json.dumps(report["attribution"], indent=1), flush=True)

    print("\nsummary (max |ROME - ours|)")
    for mode in ("noise", "substitution"):
        if mode not in report:
            continue
        m = report[mode]
        cells = "  ".join(f"{k} {m['grids'][k].get('max_abs_diff', float('nan')):.2e}" for k in KINDS)
        print(f"{mode:13s} {cells}  high {m['high_score']['abs_diff']:.2e}  low {m['low_score']['abs_diff']:.2e}"
              f"  answer {m['answer']['rome']!r}/{m['answer']['ours']!r}")
    tm = report["times_s"]
    print(f"noise trace (3 kinds): ROME {tm['rome']['median']:.1f} s, ours {tm['ours']['median']:.1f} s (median)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
