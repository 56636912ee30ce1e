"""`tracer-tui robustness`: trace one fact under several corruptions and say whether its peak moves."""

from __future__ import annotations

import json
import sys

from ..errors import InputError
from ..analyses.robustness import LAYER_TOLERANCE, MAX_SUBSTITUTES
from .common import add_model_args, check_writable, write_output


def add_parser(sub) -> None:
    p = sub.add_parser(
        "robustness",
        help="trace one fact under several corruptions and say, per kind, whether the peak moves",
        description="Trace one fact under Gaussian noise s3 (ROME's default), s1.5 and s6, uniform noise with "
                    "the std of s3, s3 noise replacing the subject, and substitution by known_1000 subjects "
                    "of the same token length (of the fact's relation where possible). Prints a table of "
                    "each corruption's peak (token, layer), a peak-layer plot per kind and a verdict: the "
                    f"peak holds when every corruption puts it at the same token within ±{LAYER_TOLERANCE} layers.",
    )
    p.add_argument("--prompt", required=True, help="the clean prompt")
    p.add_argument("--subject", required=True, help="the words corrupted (their first occurrence in the prompt)")
    add_model_args(p)
    p.add_argument("--kinds", default="hidden,mlp,attn", metavar="K,K",
                   help="what to restore: hidden, mlp, attn (default: hidden,mlp,attn)")
    p.add_argument("--positions", default="all",
                   help="the restored positions, as for trace: all, subject-last or indices (default: all)")
    p.add_argument("--samples", default="10", metavar="N", help="noise draws per cell (default: 10)")
    p.add_argument("--seed", default="1", help="seed of the noise draws and of the substitutes' choice (default: 1)")
    p.add_argument("--window", default="10", metavar="W", help="layers restored around each mlp/attn cell (default: 10)")
    p.add_argument("--target", default=None, help="target (default: the clean run's top token, the same for every corruption)")
    p.add_argument("--substitutes", default="3", metavar="N",
                   help=f"substitution corruptions, 0..{MAX_SUBSTITUTES} (default: 3)")
    p.add_argument("--facts", default="known_1000",
                   help="where substitute subjects come from, a facts file in known_1000 format (default: known_1000)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--output", default=None, help="write here instead of stdout (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (default: progress on a terminal)")


def _whole(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{flag} must be a whole number (got {value!r})") from None


def _parse_positions(text: str):
    from ..inputs.positions import parse_positions

    return parse_positions(text)


def run(args) -> int:
    from ..models.load import load_model
    from ..analyses.robustness import robustness
    from ..settings import TraceSettings
    from ..core.tracing import Tracer
    from ..types import TraceRequest

    options = dict(kinds=args.kinds, positions=_parse_positions(args.positions), target=args.target,
                   samples=_whole(args.samples, "--samples"), seed=_whole(args.seed, "--seed"),
                   window=_whole(args.window, "--window"), substitutes=_whole(args.substitutes, "--substitutes"))
    if not 0 <= options["substitutes"] <= MAX_SUBSTITUTES:
        raise InputError(f"--substitutes must be from 0 to {MAX_SUBSTITUTES} (got {options['substitutes']})")
    settings = TraceSettings(kinds=options["kinds"], samples=options["samples"], seed=options["seed"],
                             window=options["window"])
    TraceRequest(args.prompt, args.subject, target=args.target, positions=options["positions"],
                 **settings.as_kwargs())  # bad input fails before the model loads
    check_writable(args.output)
    if options["substitutes"]:
        from ..inputs.facts_file import load_facts

        options["facts"] = load_facts(args.facts)
    tracer = Tracer(load_model(args.model, keep_quantized=args.keep_quantized))
    show = not args.quiet and sys.stderr.isatty()

    def progress(event) -> None:
        if show and not event.done:
            print(f"corruption {event.index + 1}/{event.total}: {event.name}", file=sys.stderr)

    result = robustness(tracer, args.prompt, args.subject, on_event=progress, **options)
    text = json.dumps(result.to_dict(), indent=1) + "\n" if args.format == "json" else result.to_text()
    return write_output(args.output, text)
