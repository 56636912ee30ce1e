"""The seed tutorial (mlxterp's causal-tracing tutorial), Parts 1-5, redone with tracer.

    uv run python examples/seed_tutorial.py

Part 1: clean, corrupted and one patched run by hand; Part 2: a layer sweep of MLP
restorations; Part 3: MLP against attention, and where along the depth the effect sits;
Part 4: the paper's method (Gaussian noise on the subject, the last subject token restored,
P(target) recovery), with its uncertainty, and averaging over prompt pairs; Part 5: the
tutorial's four test cases, each with the answer it is about and the guards' verdict.
Parts 1-3 and 5 corrupt by substituting another subject, as the tutorial does, and restore
every position at one layer (positions="whole", window=1).
"""

import json
import os
import tempfile

import tracer  # first: it loads a fast BLAS before mlx.core is imported
from tracer.analyses.summary import summarize

CLEAN = "The Eiffel Tower is located in the city of"
CORRUPTED = "The Louvre Museum is located in the city of"

# Part 5: (clean, corrupted, subject, the answer traced); the tutorial's "expected" column as targets
TEST_CASES = [
    ("The capital of France is", "The capital of Germany is", "France", "Paris"),
    ("The CEO of Tesla is", "The CEO of Apple is", "Tesla", "Elon Musk"),
    ("Water freezes at", "Water boils at", "freezes", "0"),
    ("Shakespeare wrote", "Dickens wrote", "Shakespeare", None),
]


def show(pairs):
    return ", ".join(f"{text!r} {prob:.3f}" for text, prob in pairs)


def layer_trace(model, clean, corrupted, subject, kinds, target=None):
    """Restore each kind at one layer, every position at once (the tutorial's patching)."""
    result = tracer.trace(model, clean, subject, corrupted_prompt=corrupted, kinds=kinds, window=1,
                          positions="whole", target=target)
    for warning in result.warnings:
        print(f"  warning [{warning.code}]: {warning}")
    return result


def peak_line(result, kind) -> str:
    summary = summarize(result)
    peak = summary["grids"][kind]["peak"]
    unit = "% recovery" if summary["metric"] == "recovery" else " P(target)"
    return f"peak {kind} layer {peak['layer']} ({peak['value']:.3g}{unit})"


def part_1_to_3(model) -> None:
    print("Part 1: manual causal tracing")
    clean_top = tracer.predict(model, CLEAN, k=3)
    corrupted_top = tracer.predict(model, CORRUPTED, k=3)
    print("  clean:    ", show(clean_top))
    print("  corrupted:", show(corrupted_top))
    patched = tracer.patch(model, CLEAN, CORRUPTED, kind="mlp", layers=[8], positions="whole", k=3)
    print("  patched (layer 8 MLP, all positions):", show(patched.top))

    print("Part 2: restoring each layer's MLP in turn")
    result = layer_trace(model, CLEAN, CORRUPTED, "Eiffel Tower", ("mlp", "attn"))
    mlp, attn = result.grid("mlp", "recovery")[0], result.grid("attn", "recovery")[0]
    for layer in sorted(range(len(mlp)), key=lambda layer: -mlp[layer])[:5]:
        print(f"  layer {layer:2d}: {mlp[layer]:6.1f}% recovery")

    print("Part 3: MLP against attention")
    print("  layer |   MLP %  |  attn %")
    for layer in range(10):
        mark = " *" if mlp[layer] > attn[layer] else ""
        print(f"  {layer:5d} | {mlp[layer]:8.1f} | {attn[layer]:7.1f}{mark}")
    einstein = layer_trace(model, "Albert Einstein developed the theory of", "Isaac Newton developed the theory of",
                           "Albert Einstein", ("mlp",))
    summary = summarize(einstein)
    print(f"  Einstein vs Newton: {peak_line(einstein, 'mlp')}; thirds by {summary['metric']}:")
    for name, third in summary["grids"]["mlp"]["thirds"].items():
        first, last = third["layers"]
        print(f"  {name:6s} layers {first:2d}-{last:2d}: {third['mean']:.4g} mean")


def part_4(model) -> None:
    print("Part 4: the paper's method (noise on the subject, the last subject token restored)")
    result = tracer.trace(model, CLEAN, "Eiffel Tower", kinds=("mlp",), positions="subject-last", samples=10)
    grid = result.grid("mlp", "recovery")[0]
    low, high = result.grid("mlp", "prob_low")[0], result.grid("mlp", "prob_high")[0]
    layer = int(grid.argmax())
    print(f"  P(' Paris') clean {result.clean_prob:.4f}, corrupted {result.corrupted_prob:.4f}; "
          f"peak MLP layer {layer}: {grid[layer]:.1f}% recovery, "
          f"95% interval of P {low[layer]:.4f}..{high[layer]:.4f} over 10 noise samples")
    print("  averaging over prompt pairs (tracer.sweep of a pairs file, then tracer.report)")
    pairs = [{"prompt": CLEAN, "corrupted_prompt": CORRUPTED, "subject": "Eiffel Tower"},
             {"prompt": "The capital of France is", "corrupted_prompt": "The capital of Germany is",
              "subject": "France"}]
    with tempfile.TemporaryDirectory() as folder:
        path, out = os.path.join(folder, "pairs.jsonl"), os.path.join(folder, "results.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(pair) + "\n" for pair in pairs)
        tracer.sweep(model, path, out, kinds=("mlp",), window=1)
        report = tracer.report(out)
    curve = report.curves["mlp"]["last_subject"]
    best = curve.peak_layer
    print(f"  last subject token, {curve.facts} pairs: peak AIE at layer {best} "
          f"({curve.mean[best]:+.4f}, 95% band {curve.low[best]:+.4f}..{curve.high[best]:+.4f})")


def part_5(model) -> None:
    print("Part 5: multiple factual prompts")
    for clean, corrupted, subject, target in TEST_CASES:
        print(f"Fact: {clean!r} vs {corrupted!r}, target {target!r}")
        result = layer_trace(model, clean, corrupted, subject, ("mlp",), target=target)
        tokens = " + ".join(repr(t["text"]) for t in result.target_tokens)
        aligned = "" if len(result.alignment["corrupted_tokens"]) == len(result.tokens) else ", prompts aligned"
        print(f"  target {tokens}: P clean {result.clean_prob:.4f}, corrupted {result.corrupted_prob:.4f}{aligned}; "
              f"{peak_line(result, 'mlp')}; {len(result.warnings)} warning(s)")


def main() -> None:
    model = tracer.load()  # the embedded SmolLM2-135M-Instruct, offline
    part_1_to_3(model)
    part_4(model)
    part_5(model)


if __name__ == "__main__":
    main()
