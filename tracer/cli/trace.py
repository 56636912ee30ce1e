"""`tracer-tui trace`: trace one prompt headlessly and print or save the grids."""

from __future__ import annotations

import sys
import threading

from ..errors import InputError
from ..events import CellsDone, Recording, Started
from ..types import TraceRequest
from ..metrics import VIEW_ORDER
from ..settings import add_settings_arguments, settings_from_args
from . import batch
from .common import add_model_args, check_writable, write_output
from .plots import add_trace_plot_arguments, write_trace_plots


def add_parser(sub) -> None:
    p = sub.add_parser("trace", help="trace one prompt headlessly and print or save the grids")
    p.add_argument("--prompt", required=True)
    p.add_argument("--subject", required=True)
    add_model_args(p)
    p.add_argument("--corrupted-prompt", default=None, help="substitute this prompt instead of adding noise")
    p.add_argument("--target", default=None, help="target token (default: the clean run's top token)")
    add_settings_arguments(p)
    p.add_argument("--positions", default="all", help="all | subject-last | I,J,... (default: all)")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="default: text")
    p.add_argument("--metric", choices=VIEW_ORDER, default="recovery", help="grid shown by --format text (default: recovery)")
    p.add_argument("--output", default=None, help="write here instead of stdout")
    p.add_argument("--npz", default=None, metavar="DIR",
                   help="also write ROME's per-case knowledge_0{,_mlp,_attn}.npz files here (positions all)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    batch.add_batch_argument(p)  # --batch FILE (tracer/cli/batch.py)
    add_trace_plot_arguments(p)  # --plot FILE, --plot-metric (tracer/cli/plots.py, tracer.figures)


def parse_positions(text: str):
    text = text.strip()
    if text in ("all", "subject-last"):
        return text
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise InputError(f"--positions must be all, subject-last or comma-separated integers (got {text!r})") from None


def run(args) -> int:
    if (code := batch.run_if_batch(args)) is not None:
        return code
    from .. import export
    from ..models import load_model
    from ..tracing import Tracer, run_trace

    if not args.prompt.strip():
        raise InputError("the prompt is empty")
    settings = settings_from_args(args)
    request = TraceRequest(
        args.prompt,
        args.subject,
        corrupted_prompt=args.corrupted_prompt,
        target=args.target,
        positions=parse_positions(args.positions),
        **settings.as_kwargs(),
    )
    check_writable(args.output)
    if args.npz and request.positions != "all":
        raise InputError("--npz needs the full grid: use --positions all")
    from .. import BLAS

    if not BLAS.fast:
        print(f"tracer-tui: warning: slow BLAS: {BLAS.note}", file=sys.stderr)
    tracer = Tracer(load_model(args.model, keep_quantized=args.keep_quantized))
    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    with progress:
        result = run_trace(tracer, request, on_event=progress.on_event, cancel=threading.Event())
    for w in result.warnings:
        print(f"tracer-tui: warning: {w}", file=sys.stderr)
    if args.npz:
        paths = export.to_npz(result, args.npz)
        print(f"wrote {len(paths)} .npz file(s) to {args.npz}", file=sys.stderr)
    write_trace_plots(args, result)
    if args.format == "json":
        text = export.to_json_text(result)
    elif args.format == "csv":
        text = export.to_csv(result)
    else:
        text = export.to_text(result, args.metric)
    return write_output(args.output, text)


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
