"""`tracer-tui robustness`: trace one fact under several corruptions and say whether its peak moves."""

from __future__ import annotations

import json
import sys
import threading

from ..analyses.robustness import DEFAULT_SUBSTITUTES, DEFAULTS, LAYER_TOLERANCE, MAX_SUBSTITUTES
from ..errors import InputError
from ..events import RobustnessProgress
from ..inputs.facts_file import load_facts
from ..settings import settings_from_args, whole_number
from ..types import TraceRequest
from .common import add_model_args, check_writable, loaded_engine, wait, write_output


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
    p.add_argument("--kinds", default=None, metavar="K,K",
                   help=f"what to restore: hidden, mlp, attn (default: {','.join(DEFAULTS.kinds)})")
    p.add_argument("--positions", default="all",
                   help="the restored positions, as for trace: all, subject-last or indices (default: all)")
    p.add_argument("--samples", default=None, metavar="N",
                   help=f"noise draws per cell (default: {DEFAULTS.samples})")
    p.add_argument("--seed", default=None,
                   help=f"seed of the noise draws and of the substitutes' choice (default: {DEFAULTS.seed})")
    p.add_argument("--window", default=None, metavar="W",
                   help=f"layers restored around each mlp/attn cell (default: {DEFAULTS.window})")
    p.add_argument("--target", default=None, help="target (default: the clean run's top token, the same for every corruption)")
    p.add_argument("--substitutes", default=None, metavar="N",
                   help=f"substitution corruptions, 0..{MAX_SUBSTITUTES} (default: {DEFAULT_SUBSTITUTES})")
    p.add_argument("--facts", default="known_1000",
                   help="where substitute subjects come from, a facts file in known_1000 format (default: known_1000)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--output", default=None, help="write here instead of stdout (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (default: progress on a terminal)")


def _parse_positions(text: str):
    from ..inputs.positions import parse_positions

    return parse_positions(text)


def run(args) -> int:
    settings = settings_from_args(args)  # kinds, samples, seed, window: the trace's settings and defaults
    substitutes = (DEFAULT_SUBSTITUTES if args.substitutes is None
                   else whole_number(args.substitutes, "--substitutes"))
    if not 0 <= substitutes <= MAX_SUBSTITUTES:
        raise InputError(f"--substitutes must be from 0 to {MAX_SUBSTITUTES} (got {substitutes})")
    positions = _parse_positions(args.positions)
    TraceRequest(args.prompt, args.subject, target=args.target, positions=positions,
                 **settings.as_kwargs())  # bad input fails before the model loads
    options = dict(kinds=settings.kinds, positions=positions, target=args.target, samples=settings.samples,
                   seed=settings.seed, window=settings.window, substitutes=substitutes)
    check_writable(args.output)
    if substitutes:
        options["facts"] = load_facts(args.facts)
    show = not args.quiet and sys.stderr.isatty()

    def progress(event) -> None:
        if show and isinstance(event, RobustnessProgress) and not event.done:
            print(f"corruption {event.index + 1}/{event.total}: {event.name}", file=sys.stderr)

    cancel = threading.Event()
    with loaded_engine(args) as engine:
        result = wait(engine.robustness(args.prompt, args.subject, on_event=progress, cancel=cancel, **options),
                      cancel)
    text = json.dumps(result.to_dict(), indent=1) + "\n" if args.format == "json" else result.to_text()
    return write_output(args.output, text)
