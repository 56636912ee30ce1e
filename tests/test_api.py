"""The Python front door (`import tracer`): values against plain computations, errors, the example."""

import os
import subprocess
import sys

import tracer
from tracer.inputs.prompts import tokenize
from tracer.models.load import load_model

import mlx.core as mx
import numpy as np
import pytest
from oracle import install_hooks

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return tracer.load(str(tiny_model_dir))


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    """The same model loaded separately, for plain forwards with the tests' own hooks."""
    lm = load_model(str(tiny_model_dir))
    return lm, install_hooks(lm.model)[1]


def softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def last_probs(lm, text):
    ids = mx.array([tokenize(lm.tokenizer, text).ids])
    return softmax(np.array(lm.model(ids)[0, -1].astype(mx.float32), dtype=np.float64))


def test_front_door_names():
    for name in ("load", "trace", "predict", "patch", "TraceResult", "TraceSettings", "BLAS"):
        assert name in tracer.__all__ and hasattr(tracer, name)
    for name in ("load", "trace", "predict", "patch"):
        doc = getattr(tracer, name).__doc__
        assert "Args:" in doc and "Returns:" in doc and "Raises:" in doc


def test_predict_is_the_softmax_top_k(model, plain):
    lm, _ = plain
    probs = last_probs(lm, PROMPT)
    got = tracer.predict(model, PROMPT, k=4)
    expected = np.argsort(-probs)[:4]
    assert [t for t, _ in got] == [lm.tokenizer.decode([int(i)]) for i in expected]
    np.testing.assert_allclose([p for _, p in got], probs[expected], atol=1e-6)
    with pytest.raises(tracer.InputError, match="k must be"):
        tracer.predict(model, PROMPT, k=0)


def test_trace_result_as_numpy(model):
    result = tracer.trace(model, PROMPT, SUBJECT, kinds=("mlp",), positions="subject-last", samples=2, window=3)
    grid = result.grid("mlp")
    assert grid.shape == (1, model.n_layers) and grid.dtype == np.float64
    np.testing.assert_array_equal(grid, np.array(result.grids["mlp"]["prob"]))
    recovery = 100 * (grid - result.corrupted_prob) / (result.clean_prob - result.corrupted_prob)
    if not result.recovery_available:  # the tiny model's total effect is below the minimum: NaN cells
        recovery = np.full_like(grid, np.nan)
    np.testing.assert_allclose(result.grid("mlp", "recovery"), recovery, rtol=1e-9, atol=1e-9)
    doc = result.to_dict()
    assert doc["config"]["noise"] == "s3" and doc["config"]["seed"] == 1 and doc["grids"]["mlp"]["prob"] == grid.tolist()
    with pytest.raises(tracer.InputError, match="no 'attn' grid"):
        result.grid("attn")
    with pytest.raises(tracer.InputError, match="unknown metric"):
        result.grid("mlp", "p")
    with pytest.raises(tracer.InputError, match="bad noise rule"):
        tracer.trace(model, PROMPT, SUBJECT, noise="loud")


def test_patch_against_a_plain_forward(model, plain):
    lm, hooks = plain
    n = len(tokenize(lm.tokenizer, PROMPT))
    corrupted = next(c for c in (PROMPT.replace(SUBJECT, o) for o in ("Space Needle", "Louvre Museum", "Big Ben",
                                                                      "Colosseum", "quick brown fox"))
                     if len(tokenize(lm.tokenizer, c)) == n)
    layer = 2
    got = tracer.patch(model, PROMPT, corrupted, kind="mlp", layers=[layer], positions=[3, 4], k=3)
    recorded = {}
    hooks[("mlp", layer)].fn = lambda out: recorded.setdefault("clean", out)
    last_probs(lm, PROMPT)
    keep = np.zeros((1, recorded["clean"].shape[1], 1), dtype=bool)
    keep[0, [3, 4]] = True
    hooks[("mlp", layer)].fn = lambda out: mx.where(mx.array(keep), recorded["clean"], out)
    expected = last_probs(lm, corrupted)
    hooks[("mlp", layer)].fn = None
    np.testing.assert_allclose(got.probs, expected, atol=1e-6)
    assert got.restored == {"kind": "mlp", "layers": [layer], "positions": [3, 4]}
    assert [p for _, p in got.top] == pytest.approx(sorted(expected, reverse=True)[:3], abs=1e-6)


def test_patch_restoring_the_last_hidden_state_everywhere_gives_the_clean_run(model, plain):
    lm, _ = plain
    clean = last_probs(lm, PROMPT)
    noised = tracer.patch(model, PROMPT, subject=SUBJECT, kind="hidden", layers=[model.n_layers - 1], samples=3)
    np.testing.assert_allclose(noised.probs, clean, atol=1e-6)
    with pytest.raises(tracer.InputError, match="layers must be whole numbers in"):
        tracer.patch(model, PROMPT, subject=SUBJECT, layers=[model.n_layers])
    with pytest.raises(tracer.InputError, match="corrupted prompt, or the subject"):
        tracer.patch(model, PROMPT, layers=[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS swap is Linux-only")
def test_importing_mlx_first_warns_loudly():
    code = "import mlx.core, warnings\nwarnings.simplefilter('always')\nimport tracer\nprint(tracer.BLAS.fast)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert "SlowBlasWarning" in out.stderr and "put `import tracer` before `import mlx.core`" in out.stderr


def test_library_import_does_not_load_textual():
    out = subprocess.run([sys.executable, "-c", "import sys, tracer; print('textual' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


@pytest.mark.slow
def test_the_seed_tutorial_example_runs():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "seed_tutorial.py")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "clean:     ' Paris' 0.70" in out.stdout
    assert "patched (layer 8 MLP, all positions): ' Paris'" in out.stdout
    assert out.stdout.count("% recovery") >= 5 and "Einstein vs Newton: peak mlp layer" in out.stdout
    # Part 4: the paper's noise at the last subject token, with its interval; pairs averaged by a sweep
    assert "P(' Paris') clean 0.7015, corrupted 0.0163" in out.stdout and "95% interval of P" in out.stdout
    assert "last subject token, 2 pairs: peak AIE at layer" in out.stdout
    # Part 5: the four cases, each with its answer: a multi-token target, ' 0' as the model writes it,
    # the aligned prompts of different lengths, and the guards that say which traces mean little
    assert "target ' El' + 'on' + ' Musk'" in out.stdout and "target ' ' + '0'" in out.stdout
    assert "prompts aligned" in out.stdout and "warning [weak-target]" in out.stdout
    assert "target ' Paris': P clean 0.7725" in out.stdout


def test_sweep_and_report_from_python(model, tmp_path):
    prompts = [("The capital of Germany is", "Germany"), ("Paris is the capital of", "Paris")]
    facts = [{"known_id": i, "subject": s, "attribute": model.predict([p])[0][0].text.strip(), "prompt": p,
              "template": "", "relation_id": "P0"} for i, (p, s) in enumerate(prompts)]
    path = tmp_path / "facts.json"
    path.write_text(__import__("json").dumps(facts))
    out = str(tmp_path / "r.jsonl")
    summary = tracer.sweep(model, str(path), out, kinds=("hidden",), samples=2)
    assert summary.kept == 2 and summary.skipped == 0
    rep = tracer.report(out)
    assert rep.kept == 2 and rep.kinds == ["hidden"] and len(rep.curves["hidden"]["last"].mean) == model.n_layers
    with pytest.raises(tracer.InputError, match="was written with --samples 2"):
        tracer.sweep(model, str(path), out, kinds=("hidden",), samples=3)
    with pytest.raises(tracer.InputError, match="unknown aggregate"):
        tracer.report(out, aggregate="mean")


def test_the_engine_never_imports_the_app():
    """tracer/ (CLI included) imports nothing from tui/; tui/__main__ chooses between app and CLI."""
    code = ("import sys, tracer, tracer.cli, tracer.api, tracer.render.sweep_report, tracer.engine; "
            "print(sorted(m for m in sys.modules if m == 'tui' or m.startswith('tui.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    sources = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ROOT, "tracer")) for f in fs if f.endswith(".py")]
    offenders = [p for p in sources if any(line.lstrip().startswith(("import tui", "from tui")) for line in open(p))]
    assert offenders == []


def test_patch_aligns_a_corrupted_prompt_of_another_length(model, plain):
    """A shorter corrupted prompt: restoring mlp at the aligned positions equals a plain forward of the
    corrupted prompt with the clean outputs put where the alignment says (last subject tokens together)."""
    lm, hooks = plain
    clean_ids = tokenize(lm.tokenizer, PROMPT).ids
    corrupted = PROMPT.replace(SUBJECT, "Rome")
    corrupted_ids = tokenize(lm.tokenizer, corrupted).ids
    assert len(corrupted_ids) < len(clean_ids)
    shift = len(corrupted_ids) - len(clean_ids)
    last = len(clean_ids) - 1
    span_end = max(i for i, t in enumerate(tokenize(lm.tokenizer, PROMPT).offsets)  # the subject's last token
                   if t[0] < PROMPT.find(SUBJECT) + len(SUBJECT))
    layer = 1
    got = tracer.patch(model, PROMPT, corrupted, kind="self_attn", layers=[layer], positions=[span_end, last],
                       subject=SUBJECT)
    assert got.restored == {"kind": "attn", "layers": [layer], "positions": [span_end, last]}
    recorded = {}
    hooks[("attn", layer)].fn = lambda out: recorded.setdefault("clean", out)
    last_probs(lm, PROMPT)
    clean_out = recorded["clean"]
    keep = np.zeros((1, len(corrupted_ids), 1), dtype=bool)
    source = np.zeros(len(corrupted_ids), dtype=np.int32)
    for t in (span_end, last):
        keep[0, t + shift], source[t + shift] = True, t
    hooks[("attn", layer)].fn = lambda out: mx.where(mx.array(keep), clean_out[:, mx.array(source)], out)
    expected = last_probs(lm, corrupted)
    hooks[("attn", layer)].fn = None
    np.testing.assert_allclose(got.probs, expected, atol=1e-6)
    with pytest.raises(tracer.InputError, match="counterpart"):
        tracer.patch(model, PROMPT, corrupted, kind="mlp", layers=[1], positions=[span_end - 1], subject=SUBJECT)
