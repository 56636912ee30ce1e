"""`tracer-tui trace --batch FILE`: many traces in one process (the model is loaded once).

FILE holds one trace per row, in any format a sweep reads (tracer.inputs.facts_file): prompt pairs
{prompt, corrupted_prompt, subject, target?} traced by substitution, and rows without a
corrupted prompt ({prompt, subject, target?} or known_1000 facts) traced with noise; a JSON
list, JSON Lines or CSV with a header row. The trace settings (--kinds, --samples, --noise,
--window, --seed, --positions, ...) apply to every row.

Output: one JSON line per row, in the file's order, to --output or stdout, each written as
soon as its trace ends: {"line": "line 3", "id": ..., "prompt": ..., "subject": ...,
"corrupted_prompt": ... (pairs), then the fields of `trace --format json`}. A row that cannot
be traced (malformed, subject not in its prompt, ...) gets {"line": ..., "error": "..."} and
one line on stderr, and the rest go on. Exit code 0 when every row was traced, 2 when any
was bad (or the file itself cannot be read).

trace.py calls only `add_batch_argument` (in add_parser) and `run_if_batch` (first in run).
"""

from __future__ import annotations

import sys
import threading
import time

from ..errors import InputError, TracerError, one_line
from .common import wait

BATCH_EXCLUSIVE = (("prompt", "--prompt"), ("subject", "--subject"), ("corrupted_prompt", "--corrupted-prompt"),
                   ("corrupted_subject", "--corrupted-subject"), ("target", "--target"), ("npz", "--npz"),
                   ("inspect", "--inspect"))


def add_batch_argument(parser) -> None:
    """Add --batch FILE to the trace parser; --prompt and --subject stop being required there
    (run_if_batch asks for them when --batch is not given)."""
    parser.add_argument(
        "--batch", metavar="FILE", default=None,
        help="trace every row of FILE in one process (prompt pairs {prompt, corrupted_prompt, subject, target?} by "
        "substitution, rows without corrupted_prompt with noise; JSON list, JSON Lines or CSV with a header row); "
        "writes one JSON line per row to --output or stdout; exit 0 when every row traced, 2 when any was bad")
    for action in parser._actions:
        if action.dest in ("prompt", "subject"):
            action.required = False


def run_if_batch(args) -> int | None:
    """The --batch dispatch of `trace`.

    Args:
        args: the trace command's parsed arguments.

    Returns:
        With --batch, the batch's exit code (0 or 2); without, None (the ordinary trace goes on).

    Raises:
        InputError: no --batch and no --prompt/--subject, or --batch with options it replaces.
    """
    path = getattr(args, "batch", None)
    if path is None:
        missing = [flag for name, flag in BATCH_EXCLUSIVE[:2] if getattr(args, name, None) is None]
        if missing:
            raise InputError(f"trace needs {' and '.join(missing)} (or --batch FILE)")
        return None
    given = [flag for name, flag in BATCH_EXCLUSIVE if getattr(args, name, None) not in (None, False)]
    if given:
        raise InputError(f"--batch reads every prompt, subject and target from {path}: drop {', '.join(given)}")
    if getattr(args, "format", "json") == "csv":
        raise InputError("--batch writes JSON lines: --format csv does not apply")
    return run_batch(args)


def _positions(text: str):
    from ..inputs.positions import parse_positions

    return parse_positions(text)


def request_for(fact, settings: dict, positions, top_k: int | None):
    """The TraceRequest of one row.

    Args:
        fact: the row (tracer.inputs.facts.Fact).
        settings: TraceSettings' fields by name.
        positions: the restored positions ("all", "subject-last", indices).
        top_k: the number of top predictions, or None for the default.

    Returns:
        A TraceRequest: substitution for a pair, noise otherwise.
    """
    from ..types import TraceRequest

    extra = {} if top_k is None else {"top_k": top_k}
    if fact.corrupted_prompt is not None:
        return TraceRequest(fact.prompt, fact.subject, corrupted_prompt=fact.corrupted_prompt, target=fact.target,
                            corrupted_subject=fact.corrupted_subject, positions=positions, **extra, **settings)
    return TraceRequest(fact.prompt, fact.subject, target=fact.target, positions=positions, **extra, **settings)


def run_batch(args) -> int:
    """Trace every row of args.batch (see the module docstring).

    Args:
        args: the trace command's parsed arguments.

    Returns:
        0 when every row was traced, 2 when any was bad.
    """
    from ..inputs.facts_file import read_rows
    from ..settings import settings_from_args
    from .common import check_writable, loaded_engine

    rows = read_rows(args.batch, what="batch file")
    if not rows:
        raise InputError(f"batch file {args.batch} holds no rows")
    settings = settings_from_args(args).as_kwargs()  # bad settings fail before the model loads
    positions = _positions(getattr(args, "positions", "all") or "all")
    top_k = getattr(args, "top_k", None)
    top_k = None if top_k is None else int(top_k)
    check_writable(args.output)
    quiet = getattr(args, "quiet", False)
    with loaded_engine(args) as engine:  # each row through tracer.trace, on the engine's thread
        wait(engine.load())
        return _trace_rows(engine, rows, args, settings, positions, top_k, quiet)


def _trace_rows(engine, rows, args, settings: dict, positions, top_k, quiet: bool) -> int:
    """Trace each row into the output (JSON Lines), a bad row reported and skipped."""
    from ..render import export

    out = sys.stdout if args.output is None else _open(args.output)
    bad = 0
    started = time.perf_counter()
    try:
        for n, (where, label, fact) in enumerate(rows, 1):
            line: dict = {"line": label}
            try:
                if isinstance(fact, str):
                    raise InputError(fact)
                line.update(id=fact.known_id, prompt=fact.prompt, subject=fact.subject)
                if fact.corrupted_prompt is not None:
                    line["corrupted_prompt"] = fact.corrupted_prompt
                request = request_for(fact, settings, positions, top_k)
                cancel = threading.Event()
                result = wait(engine.call("trace", request.prompt, request.subject, cancel=cancel,
                                          **request.options()), cancel)
            except TracerError as exc:
                message = one_line(str(exc))
                message = message if message.startswith(where) else f"{where}: {message}"
                print(f"tracer-tui: error: {message}", file=sys.stderr)
                out.write(export.dumps({"line": label, "error": message}) + "\n")
                out.flush()
                bad += 1
                continue
            for w in result.warnings:
                print(f"tracer-tui: warning: {label}: {w}", file=sys.stderr)
            out.write(export.dumps({**line, **export.to_json(result)}, ensure_ascii=False) + "\n")
            out.flush()
            if not quiet:
                print(f"[{n}/{len(rows)}] {label}: p_clean {result.clean_prob:.4f}, p_corrupted "
                      f"{result.corrupted_prob:.4f} ({result.seconds:.1f} s)", file=sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    done = len(rows) - bad
    print(f"batch: {done} of {len(rows)} rows traced, {bad} bad ({time.perf_counter() - started:.0f} s)"
          + ("" if args.output is None else f"; wrote {args.output}"), file=sys.stderr)
    return 2 if bad else 0


def _open(path: str):
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write output file {path}: {exc.strerror or exc}") from None
