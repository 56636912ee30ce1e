"""The seed tutorial's Parts 1-3 (mlxterp's causal-tracing tutorial), redone with tracer.

    uv run python examples/seed_tutorial.py

Part 1: clean, corrupted and one patched run by hand; Part 2: a layer sweep of MLP
restorations; Part 3: MLP against attention, and where along the depth the effect sits.
As in the tutorial, the corruption substitutes another subject and each restoration
covers every position at one layer (window=1); see README "From Python" for ROME's
noise-based trace.
"""

import tracer  # first: it loads a fast BLAS before mlx.core is imported

CLEAN = "The Eiffel Tower is located in the city of"
CORRUPTED = "The Louvre Museum is located in the city of"


def show(pairs):
    return ", ".join(f"{text!r} {prob:.3f}" for text, prob in pairs)


def layer_recovery(model, clean, corrupted, subject, kind):
    """{layer: recovery %} restoring `kind` at one layer, every position at once."""
    n_tokens = len(model.tokenize(clean)[0])
    result = tracer.trace(model, clean, subject, corrupted_prompt=corrupted, kinds=(kind,), window=1,
                          positions=tuple(range(n_tokens)))
    for warning in result.warnings:
        print("  warning:", warning)
    return dict(enumerate(result.grid(kind, "recovery")[0].tolist()))


def main() -> None:
    model = tracer.load()  # the embedded SmolLM2-135M-Instruct, offline

    print("Part 1: manual causal tracing")
    clean_top = tracer.predict(model, CLEAN, k=3)
    corrupted_top = tracer.predict(model, CORRUPTED, k=3)
    print("  clean:    ", show(clean_top))
    print("  corrupted:", show(corrupted_top))
    if clean_top[0][0] == corrupted_top[0][0]:
        print("  WARNING: corruption did not change the prediction")
    patched = tracer.patch(model, CLEAN, CORRUPTED, kind="mlp", layers=[8], positions="all", k=3)
    print("  patched (layer 8 MLP, all positions):", show(patched.top))

    print("Part 2: restoring each layer's MLP in turn")
    mlp = layer_recovery(model, CLEAN, CORRUPTED, "Eiffel Tower", "mlp")
    for layer, recovery in sorted(mlp.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  layer {layer:2d}: {recovery:6.1f}% recovery")

    print("Part 3: MLP against attention")
    attn = layer_recovery(model, CLEAN, CORRUPTED, "Eiffel Tower", "attn")
    print("  layer |   MLP %  |  attn %")
    for layer in range(10):
        mark = " *" if mlp[layer] > attn[layer] else ""
        print(f"  {layer:5d} | {mlp[layer]:8.1f} | {attn[layer]:7.1f}{mark}")
    einstein = layer_recovery(model, "Albert Einstein developed the theory of",
                              "Isaac Newton developed the theory of", "Albert Einstein", "mlp")
    layers = sorted(einstein)
    peak = max(einstein, key=einstein.get)
    print(f"  Einstein vs Newton: peak MLP recovery at layer {peak} ({einstein[peak]:.1f}%)")
    third = len(layers) // 3
    for name, part in (("early", layers[:third]), ("middle", layers[third:2 * third]), ("late", layers[2 * third:])):
        mean = sum(einstein[layer] for layer in part) / len(part)
        print(f"  {name:6s} layers {part[0]:2d}-{part[-1]:2d}: {mean:6.1f}% mean recovery")


if __name__ == "__main__":
    main()
