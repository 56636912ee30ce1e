"""`tracer-tui trace`: trace one prompt headlessly and print or save the grids."""

from __future__ import annotations

import json
import sys
import threading

from ..blas import load_fast_blas
from ..errors import InputError
from ..events import CellsDone, Recording, Started
from ..metrics import VIEW_ORDER
from ..settings import add_settings_arguments, kind_name, settings_from_args
from ..types import AUTO_CI_WIDTH, AUTO_SAMPLES, TraceRequest
from . import batch
from .common import add_model_args, check_writable, loaded_engine, wait, write_output
from .plots import add_trace_plot_arguments, write_trace_plots

LAYOUTS = ("tokens-down", "layers-down")


def add_parser(sub) -> None:
    p = sub.add_parser("trace", help="trace one prompt headlessly and print or save the grids",
                       description="Trace one prompt: the clean run, a corrupted run (noise on the subject, or "
                       "--corrupted-prompt), and the runs restoring each (token, layer) cell.")
    p.add_argument("--prompt", required=True, help="the clean prompt")
    p.add_argument("--subject", required=True, help="the words of the prompt whose embeddings are corrupted")
    add_model_args(p)
    p.add_argument("--corrupted-prompt", default=None, metavar="TEXT",
                   help="substitute this prompt instead of adding noise; it may have another token length "
                   "(the two are aligned: shared start and end token by token, the differing spans last tokens "
                   "together) (default: none, noise)")
    p.add_argument("--corrupted-subject", default=None, metavar="TEXT",
                   help="with --corrupted-prompt: the words of the corrupted prompt that stand for the subject, "
                   "aligned with it last token to last token, when the prompts differ elsewhere too "
                   "(default: found by aligning the two prompts)")
    p.add_argument("--target", default=None,
                   help="the answer traced, one or several tokens (P of the whole target by teacher forcing) "
                   "(default: the clean run's top token)")
    add_settings_arguments(p)
    p.add_argument("--positions", default="all", metavar="P",
                   help="all (one row per token), or restored together: whole, subject, subject-last, last, "
                   "an index, a range or a list (3, 0-4, 0,2,5-7; negative indices count from the end) (default: all)")
    p.add_argument("--top-k", type=int, default=5, metavar="K",
                   help="top predictions of the clean and corrupted runs shown, 1..100 (default: 5)")
    p.add_argument("--top", type=int, default=3, metavar="N", help="top layers per kind in the summary (default: 3)")
    p.add_argument("--inspect", default=None, metavar="KIND:LAYER[:TOKEN]",
                   help="also show the top-k predictions of one patched cell, e.g. mlp:15 or mlp:15:4 "
                   "(default: none)")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="output format (default: text)")
    p.add_argument("--metric", choices=VIEW_ORDER, default="recovery",
                   help="grid shown by --format text (default: recovery)")
    p.add_argument("--layout", choices=LAYOUTS, default="tokens-down",
                   help="--format text: tokens-down (a table per kind) or layers-down (layers as rows, kinds as "
                   "columns, each kind along its peak's row) (default: tokens-down)")
    p.add_argument("--output", default=None, metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--npz", default=None, metavar="DIR",
                   help="also write ROME's per-case knowledge_0{,_mlp,_attn}.npz files here (positions all) "
                   "(default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--estimate-only", action="store_const", const="only", dest="estimate", default="off",
                     help="only the first-order estimate of every cell (attribution patching: one forward and "
                     "backward pass per batch of samples), no patched runs")
    how.add_argument("--progressive", action="store_const", const="progressive", dest="estimate",
                     help="estimate every cell first, then run the exact cells largest estimated effect first; "
                     "the same grids, plus the estimate and its error (JSON: estimate, estimate_error)")
    p.add_argument("--ci-width", default=None, metavar="W",
                   help="adaptive samples: give each cell more noise samples (doubling from 3, up to --samples) "
                   "until its 95%% interval of P is at most W wide; `--samples auto` is --samples "
                   f"{AUTO_SAMPLES} --ci-width {AUTO_CI_WIDTH}; the first Ctrl-C stops refining (every cell "
                   "keeps the samples it has, exit 0), a second cancels (default: none, every cell gets --samples)")
    batch.add_batch_argument(p)  # --batch FILE (tracer/cli/batch.py)
    add_trace_plot_arguments(p)  # --plot FILE, --plot-metric (tracer/cli/plots.py, tracer.render.figures)


def _adaptive_samples(args) -> float | None:
    """--samples auto / --ci-width: the interval width to run cells to (None: fixed samples); turns
    `--samples auto` into the most samples a cell may get."""
    if args.samples == "auto":
        args.samples = str(AUTO_SAMPLES)
        if args.ci_width is None:
            return AUTO_CI_WIDTH
    if args.ci_width is None:
        return None
    try:
        return float(args.ci_width)
    except ValueError:
        raise InputError(f"--ci-width must be a number (got {args.ci_width!r:.40})") from None


def parse_inspect(text: str | None):
    """--inspect's value, parsed before any model is loaded.

    Args:
        text: KIND:LAYER[:TOKEN] (a kind or an alias, integers), or None.

    Returns:
        (kind, layer, token or None); None when `text` is None.

    Raises:
        InputError: not of that form, an unknown kind (aliases allowed), or a layer or token that
            is not an integer.
    """
    if text is None:
        return None
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise InputError(f"--inspect takes KIND:LAYER or KIND:LAYER:TOKEN, e.g. mlp:15 (got {text!r:.40})")
    kind = kind_name(parts[0])
    try:
        layer = int(parts[1])
        token = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise InputError(f"--inspect {text!r:.40}: the layer and the token must be integers") from None
    return kind, layer, token


def run(args) -> int:
    """trace: check the options, load the model, trace, and write the chosen format.

    Args:
        args: the parsed options (add_parser).

    Returns:
        The exit code (0); bad input raises InputError (one line, exit 2 in run_cli).
    """
    if (code := batch.run_if_batch(args)) is not None:
        return code
    from ..render import export, trace_text
    from ..sweeps.npz import trace_to_npz

    if not args.prompt.strip():
        raise InputError("the prompt is empty")
    if not 1 <= args.top <= 1000:
        raise InputError(f"--top must be between 1 and 1000 (got {args.top})")
    ci_width = _adaptive_samples(args)
    settings = settings_from_args(args)
    request = TraceRequest(
        args.prompt,
        args.subject,
        corrupted_prompt=args.corrupted_prompt,
        corrupted_subject=args.corrupted_subject,
        target=args.target,
        positions=args.positions,
        top_k=args.top_k,
        estimate=args.estimate,
        ci_width=ci_width,
        **settings.as_kwargs(),
    )
    inspect = parse_inspect(args.inspect)
    check_writable(args.output)
    if args.npz and request.positions != "all":
        raise InputError("--npz needs the full grid: use --positions all")
    with loaded_engine(args) as engine:
        blas = load_fast_blas()
        if not blas.fast:  # said at once (the trace may take minutes), and not again from its warnings
            print(f"tracer-tui: warning: slow BLAS: {blas.note}", file=sys.stderr)
        info = wait(engine.load())
        if inspect:  # checked before the trace, which may take minutes
            _check_inspect(engine, info.n_layers, args.prompt, *inspect)
        cancel = threading.Event()
        settle = threading.Event() if ci_width is not None else None  # Ctrl-C: keep the samples so far
        progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
        with progress:
            result = wait(engine.call("trace", request.prompt, request.subject, on_event=progress.on_event,
                                      cancel=cancel, settle=settle, **request.options()), cancel, settle=settle)
        for w in result.warnings:
            if w.code != "slow-blas":
                print(f"tracer-tui: warning: {w}", file=sys.stderr)
        cell = (wait(engine.call("inspect", request, inspect[0], inspect[1], token=inspect[2], k=request.top_k))
                if inspect else None)
    patched = None
    if inspect:
        kind, layer, token = inspect
        patched = {"kind": kind, "layer": layer, "token": token, "restored": dict(cell.restored),
                   "top": [{"text": text, "prob": prob} for text, prob in cell.top]}
    if args.npz:
        paths = trace_to_npz(result, args.npz)
        print(f"wrote {len(paths)} .npz file(s) to {args.npz}", file=sys.stderr)
    write_trace_plots(args, result)
    if args.format == "json":
        text = export.to_json_text(result, top=args.top, extra={"inspect": patched} if patched else None)
    elif args.format == "csv":
        text = export.to_csv(result, extra_comments=[inspect_comment(patched)] if patched else None)
    else:
        text = trace_text.to_text(result, args.metric, layout=args.layout, top=args.top,
                              extra_lines=inspect_lines(patched) if patched else None)
    return write_output(args.output, text)


def _check_inspect(engine, n_layers: int, prompt: str, kind: str, layer: int, token: int | None) -> None:
    """InputError when --inspect's layer or token lies outside the model or the prompt."""
    if not 0 <= layer < n_layers:
        raise InputError(f"--inspect layer {layer} out of range: the model has layers 0..{n_layers - 1}")
    if token is not None:
        n = len(engine.tokenize(prompt)[0])
        if not -n <= token < n:
            raise InputError(f"--inspect token {token} out of range: the prompt has {n} tokens (0..{n - 1})")


def inspect_comment(patched: dict) -> str:
    """--inspect's result as one CSV comment line."""
    cell = ":".join(str(x) for x in (patched["kind"], patched["layer"], patched["token"]) if x is not None)
    return f"# inspect {cell}: " + "; ".join(f"{json.dumps(t['text'])} {t['prob']:.6g}" for t in patched["top"])


def inspect_lines(patched: dict) -> list[str]:
    """--inspect's text: which cell was restored (as the run reports it) and its top-k predictions."""
    from ..render.tokens import show_token

    restored = patched["restored"]
    layers = restored.get("layers") or [patched["layer"]]
    span = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
    where = restored.get("positions")
    at = f", positions {','.join(str(p) for p in where)}" if where else ""
    lines = [f"inspect {patched['kind']}:{patched['layer']} (restoring {restored.get('kind', patched['kind'])} "
             f"{span}{at}): top-{len(patched['top'])} predictions"[:100]]
    lines += [f"  {i:>2}  {show_token(text)[:30]:<30} {prob:7.4f}" for i, (text, prob) in
              enumerate(((t["text"], t["prob"]) for t in patched["top"]), 1)]
    return lines


class _Progress:
    """A rich progress bar on stderr while a trace runs (only on a terminal): the recording of the
    clean and corrupted runs layer by layer ("recording clean run: layer 12/30"), then the cells."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("starting", total=None, count="")
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def on_event(self, event) -> None:
        if self._bar is None:
            return
        if isinstance(event, Recording):
            total = event.n_layers * event.n_batches
            if event.layer == 0 and event.batch == 1:  # a phase begins: its own bar and time estimate
                self._bar.reset(self._task, total=total, description=event.describe(), count="")
            self._bar.update(self._task, completed=round(event.fraction * total), description=event.describe())
        elif isinstance(event, Started):
            self._bar.reset(self._task, total=event.total_cells, completed=0, description="tracing",
                            count=f"0/{event.total_cells} cells")
        elif isinstance(event, CellsDone):
            self._bar.update(self._task, completed=event.done, total=event.total,
                             count=f"{event.done}/{event.total} cells")
