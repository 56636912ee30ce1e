"""Placeholder until the Textual app lands: print the model summary."""


def run_app(args) -> int:
    from tracer.models import load_model

    lm = load_model(args.model, keep_quantized=args.keep_quantized)
    print(lm.summary())
    return 0
