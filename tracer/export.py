"""A TraceResult as JSON (the documented schema), long-format CSV, or a labelled text table."""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap

import numpy as np

from .guards import MIN_TOTAL_EFFECT, warning_dict
from .metrics import METRIC_NAMES, METRICS


def finite_or_null(x):
    """`x` with every non-finite float (NaN, +-inf; numpy's too) made None, in nested dicts,
    lists and tuples: strict JSON has no NaN or Infinity. Where they occur: a model whose
    logits hold NaN or inf (then P(target), recovery and the logit difference are NaN), a
    logit difference against a -inf logit, a report's mean or std over no facts."""
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    return x


def dumps(obj, **kwargs) -> str:
    """Strict JSON of `obj`: non-finite floats become null (finite_or_null), and
    allow_nan=False makes any that slipped through an error instead of invalid JSON."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)


UNCERTAINTY_KEYS = ("prob_std", "prob_low", "prob_high", "logit_diff_std")  # noise mode only


def grid_keys(result) -> tuple[str, ...]:
    """The keys each exported grid carries: the metrics, then (noise mode) the uncertainty keys
    the result has: prob_std, prob_low, prob_high, logit_diff_std."""
    first = next(iter(result.grids.values()), {})
    return METRIC_NAMES + tuple(k for k in UNCERTAINTY_KEYS if k in first)


def prediction_dicts(predictions) -> list[dict]:
    """Top predictions (Prediction) as JSON: [{"id", "text", "prob"}], most probable first."""
    return [{"id": p.token_id, "text": p.text, "prob": p.prob} for p in predictions]


def to_json(result, *, top: int = 3, extra: dict | None = None) -> dict:
    """The documented JSON document; non-finite values are null (see finite_or_null).

    Args:
        result: a TraceResult.
        top: how many top layers the summary lists per grid.
        extra: more top-level keys (the CLI's "inspect").

    Returns:
        A dict of plain JSON values.
    """
    return finite_or_null({**_to_json(result, top), **(extra or {})})


def _to_json(result, top: int) -> dict:
    from .summary import summarize

    req = result.request
    keys = grid_keys(result)
    return {
        "model": result.model,
        "tokens": list(result.tokens),
        "subject_range": list(result.subject_range),
        "target": {"id": result.target_id, "text": result.target_text},
        "target_tokens": [dict(t) for t in result.target_tokens],
        "clean_prob": result.clean_prob,
        "corrupted_prob": result.corrupted_prob,
        "recovery_available": result.recovery_available,
        "clean_top": prediction_dicts(result.clean_top),
        "corrupted_top": prediction_dicts(result.corrupted_top),
        "alignment": result.alignment,
        "config": {
            "kinds": list(req.kinds),
            "samples": req.samples if result.corruption == "noise" else 1,
            "noise": req.noise,
            "noise_std": result.noise_std,
            "replace": req.replace,
            "window": req.window,
            "positions": result.positions if result.positions == "all" else list(result.positions),
            "seed": req.seed,
            "sever": list(req.sever),
            "corruption": result.corruption,
            "top_k": req.top_k,
        },
        "grids": {kind: {m: grid[m] for m in keys if m in grid} for kind, grid in result.grids.items()},
        "summary": summarize(result, top=top),
        "warnings": [warning_dict(w) for w in result.warnings],
        "timing": {"seconds": result.seconds},
    }


def to_json_text(result, *, top: int = 3, extra: dict | None = None) -> str:
    """to_json as indented strict JSON text, with a final newline."""
    return dumps(to_json(result, top=top, extra=extra), indent=1) + "\n"


def row_labels(result) -> list[tuple[int, str]]:
    """(token index, label) of each grid row."""
    if result.positions == "all":
        return [(i, t) for i, t in enumerate(result.tokens)]
    return [(p, result.tokens[p]) for p in result.positions]


def _top_comment(predictions) -> str:
    return "; ".join(f"{json.dumps(p.text)} {p.prob:.6g}" for p in predictions)


def csv_comments(result) -> list[str]:
    """The CSV's header comment lines (each starts with "# "): the model, the target with its clean
    and corrupted probability, whether recovery is available, and both runs' top-k predictions
    (each a JSON-quoted token text and its probability)."""
    return [
        f"# model: {escape_controls(result.model)}",
        f"# target: {json.dumps(result.target_text)} (id {result.target_id}); clean_prob {result.clean_prob:.6g}; "
        f"corrupted_prob {result.corrupted_prob:.6g}",
        f"# recovery_available: {'true' if result.recovery_available else 'false'}",
        f"# clean_top: {_top_comment(result.clean_top)}",
        f"# corrupted_top: {_top_comment(result.corrupted_top)}",
    ]


def _csv_value(v) -> str:
    return "" if v is None else f"{v:.6g}"


def to_csv(result) -> str:
    """Long-format CSV: comment lines ("# ...", csv_comments), then a header and one line per
    (kind, row, layer) with the metrics and, in noise mode, the uncertainty columns; a cell
    without a value is empty. Read it with e.g. ``csv.DictReader(l for l in f if l[:1] != "#")``."""
    out = io.StringIO()
    out.write("\n".join(csv_comments(result)) + "\n")
    writer = csv.writer(out, lineterminator="\n")
    keys = grid_keys(result)
    writer.writerow(["kind", "token_index", "token", "layer", *keys])
    for kind, grid in result.grids.items():
        if result.positions == "all":
            rows = [(i, result.tokens[i]) for i in range(len(result.tokens))]
        else:  # one row restoring all chosen positions together
            rows = [("+".join(str(p) for p in result.positions), "+".join(result.tokens[p] for p in result.positions))]
        for r, (index, token) in enumerate(rows):
            for layer in range(len(grid["prob"][r])):
                writer.writerow([kind, index, token, layer, *(_csv_value(grid[m][r][layer]) for m in keys)])
    return out.getvalue()


def _control_picture(code: int) -> str:
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ .. ␟: ESC -> ␛, CR -> ␍, BEL -> ␇
    if code == 0x7F:
        return "␡"
    return f"\\x{code:02x}"  # C1 controls (0x80-0x9f) have no pictures


_CONTROLS = {c: _control_picture(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}


_CONTROLS_BUT_NEWLINE = {c: p for c, p in _CONTROLS.items() if c != 0x0A}


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` safe for a terminal: every control character (C0, DEL, C1) shown as a
    picture (␛, ␍, ␇, ␡) or a \\x escape, never sent raw (a raw CR or ESC rewrites the line);
    `keep_newlines` leaves line breaks of a several-line message alone."""
    return str(text).translate(_CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS)


def show_token(text: str) -> str:
    """A token as a label: whitespace made visible (' Tower' -> '␣Tower', ⏎, ⇥) and every other
    control character escaped (escape_controls); the empty token is '∅'. The one helper for
    token labels in the text export, the CLI and the app (tracer.plot.visible)."""
    return escape_controls(text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")) or "∅"


WIDTH = 100  # text tables fit this many columns
LABEL_MAX = 20  # a row label's longest token text in a table
CELL = 7  # a table cell's width, its leading space included


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _top_table(result) -> list[str]:
    """The clean and corrupted runs' top-k predictions side by side."""
    k = max(len(result.clean_top), len(result.corrupted_top))
    lines = [f"top-{k} predictions   {'clean':<24}  corrupted"]
    for i in range(k):
        cells = []
        for top in (result.clean_top, result.corrupted_top):
            p = top[i] if i < len(top) else None
            cells.append(f"{_cut(show_token(p.text), 16):<16} {p.prob:7.4f}" if p else " " * 24)
        lines.append(f"  {i + 1:>2}                {cells[0]}  {cells[1]}".rstrip())
    return lines


def _peak_interval(result) -> str | None:
    """Noise mode: "95% interval ... at the peak: ±X (N samples)" of the first grid's peak cell."""
    from .summary import summarize_grid, summary_metric

    kind = next(iter(result.grids), None)
    if kind is None or "prob_low" not in result.grids[kind]:
        return None
    peak = summarize_grid(result, kind, summary_metric(result)[0], top=0)["peak"]
    if peak is None:
        return None
    low = result.grids[kind]["prob_low"][peak["row"]][peak["layer"]]
    high = result.grids[kind]["prob_high"][peak["row"]][peak["layer"]]
    where = (f"token {peak['token']} {_cut(show_token(peak['text']), LABEL_MAX)}" if peak["token"] is not None
             else "restored positions")
    prob = result.grids[kind]["prob"][peak["row"]][peak["layer"]]
    n = result.request.samples
    if low is None or high is None or not math.isfinite(high - low):
        half = f"({n} sample{'s' if n != 1 else ''}: no interval)"
    else:
        half = f"±{(high - low) / 2:.3g} ({n} samples)"
    return f"95% interval of P(target) at the peak ({kind}, {where}, layer {peak['layer']}): {prob:.4g} {half}"


def header(result) -> str:
    """The text output's header: model, prompt, target, P(target) clean and corrupted, the
    corruption, both runs' top-k predictions and (noise mode) the interval at the peak."""
    lines = [
        f"model: {escape_controls(result.model)}",
        f"prompt: {result.request.prompt!r}  subject: {result.request.subject!r} "
        f"(tokens {result.subject_range[0]}..{result.subject_range[1] - 1})",
        f"target: {escape_controls(repr(result.target_text))} (id {result.target_id})",
        f"clean P(target) = {result.clean_prob:.4f}   corrupted P(target) = {result.corrupted_prob:.4f}   "
        f"total effect = {result.clean_prob - result.corrupted_prob:.4f}",
    ]
    if len(result.target_tokens) > 1:
        lines.append("target tokens (P clean / corrupted; P(target) is their product): " + ", ".join(
            f"{show_token(t['text'])} {t['clean_prob']:.4f}/{t['corrupted_prob']:.4f}" for t in result.target_tokens))
    if result.corruption == "noise":
        req = result.request
        how = "replacing the subject embeddings" if req.replace else "added to the subject embeddings"
        lines.append(f"corruption: noise {req.noise_rule.describe(result.noise_std)}, {how}, "
                     f"{req.samples} samples, seed {req.seed}")
    else:
        lines.append(f"corruption: substitution with {result.request.corrupted_prompt!r}")
    interval = _peak_interval(result)
    if interval:
        lines.append(interval)
    lines = [wrapped for line in lines for wrapped in
             (textwrap.wrap(line, WIDTH, subsequent_indent="  ", break_on_hyphens=False) or [""])]
    if result.clean_top or result.corrupted_top:
        lines += _top_table(result)
    return "\n".join(lines)


def cell_text(value, metric: str, width: int = CELL - 1) -> str:
    """One table cell: the metric's format, narrowed to `width` when the value is large;
    "n/a" for a cell without a value."""
    if value is None:
        return "n/a".rjust(width)
    text = METRICS[metric].cell.format(value)
    if len(text) > width:
        text = f"{value:{width}.0f}"
    if len(text) > width:
        text = f"{value:{width}.0e}"
    return text.rjust(width)


def _layer_blocks(n_layers: int, label_width: int) -> list[range]:
    per = max(1, (WIDTH - label_width) // CELL)
    return [range(a, min(a + per, n_layers)) for a in range(0, n_layers, per)]


def grid_table(result, kind: str, metric: str = "recovery") -> str:
    """Tokens down, layers across; subject rows marked with '*'; the layers wrapped into blocks
    so that every line fits WIDTH columns; "n/a" where a cell has no value."""
    grid = result.grids[kind][metric]
    labels = row_labels(result)
    if result.positions != "all":
        labels = [(-1, _cut(" + ".join(show_token(t) for _, t in labels), 2 * LABEL_MAX))]
    b, e = result.subject_range
    names = [("*" if b <= i < e else " ") + _cut(show_token(t), LABEL_MAX) if i >= 0 else t for i, t in labels]
    width = max(12, max(len(n) for n in names) + 1)
    rows = "tokens" if result.positions == "all" else "restored positions"
    lines = [f"{kind} - {METRICS[metric].title} (rows: {rows}; columns: layers)"]
    for n, block in enumerate(_layer_blocks(len(grid[0]), width)):
        if n:
            lines.append("")
        lines.append(" " * width + "".join(f"{layer:>{CELL}d}" for layer in block))
        for name, row in zip(names, grid):
            lines.append(name.ljust(width) + "".join(" " + cell_text(row[layer], metric) for layer in block))
    return "\n".join(lines)


def layers_table(result, metric: str = "recovery") -> str:
    """Layers down, kinds across (the seed tutorial's "Layer | MLP | Attn" table): each kind's
    column is its grid's row holding its peak (positions "all": the token whose restoration
    helps most, named in the heading; otherwise the one row of restored positions). '*' marks
    each column's largest value."""
    from .summary import summarize_grid

    kinds = list(result.grids)
    peaks = {k: summarize_grid(result, k, metric, top=0)["peak"] for k in kinds}
    widths = {k: max(len(k), CELL + 1) for k in kinds}
    lines = [f"{METRICS[metric].title} by layer (rows: layers; columns: kinds, each along its peak's row)"]
    if result.positions == "all":
        rows = [f"{k}: token {p['token']} {_cut(show_token(p['text']), LABEL_MAX)}" if p else f"{k}: no value"
                for k, p in peaks.items()]
        lines += textwrap.wrap("   ".join(rows), WIDTH, initial_indent="  ", subsequent_indent="  ")
    else:
        lines += textwrap.wrap("restored together: " + " + ".join(
            f"{p} {_cut(show_token(result.tokens[p]), LABEL_MAX)}" for p in result.positions), WIDTH,
            initial_indent="  ", subsequent_indent="  ")
    lines.append("layer" + "".join(f" {k:>{widths[k]}} " for k in kinds).rstrip())
    for layer in range(len(next(iter(result.grids.values()))["prob"][0])):
        cells = []
        for k in kinds:
            p = peaks[k]
            v = result.grids[k][metric][p["row"]][layer] if p else None
            mark = "*" if p and layer == p["layer"] else " "
            cells.append(" " + cell_text(v, metric, widths[k]) + mark)
        lines.append(f"{layer:>5d}" + "".join(cells).rstrip())
    return "\n".join(lines)


def _missing_note(result, metric: str) -> str | None:
    """The legend line for cells shown as n/a, or None when every shown cell has a value."""
    if not any(v is None for g in result.grids.values() for row in g[metric] for v in row):
        return None
    if metric == "recovery" and not result.recovery_available:
        return "n/a: no value (recovery % is not available; see --metric prob)"
    return "n/a: no value (a token without a counterpart in the aligned corrupted prompt is not restored)"


def to_text(result, metric: str = "recovery", *, layout: str = "tokens-down", top: int = 3,
            extra_lines: list[str] | None = None) -> str:
    """The text output: header, the grids (or the layers-down table), the summary, any extra lines.

    Args:
        result: a TraceResult.
        metric: the metric shown; "recovery" without recovery available shows P(target) instead
            (saying so), since probabilities are always shown.
        layout: "tokens-down" (one table per kind, tokens down, layers across, in blocks of
            layers fitting 100 columns) or "layers-down" (layers down, kinds across).
        top: how many top layers the summary lists per kind.
        extra_lines: more lines after the summary (the CLI's --inspect).

    Returns:
        The text, ending with a newline.
    """
    from .summary import summarize, summary_lines

    parts = [header(result), ""]
    if metric == "recovery" and not result.recovery_available:
        gap = result.clean_prob - result.corrupted_prob
        parts += [f"recovery % is not available (total effect {gap:.4f} is below {MIN_TOTAL_EFFECT}): "
                  "showing P(target)", ""]
        metric = "prob"
    if layout == "layers-down":
        parts += [layers_table(result, metric), ""]
    else:
        for kind in result.grids:
            parts += [grid_table(result, kind, metric), ""]
    note = _missing_note(result, metric)
    if note:
        parts += [note, ""]
    parts += [*summary_lines(summarize(result, top=top)), ""]
    if extra_lines:
        parts += [*extra_lines, ""]
    marks = "'*' marks subject tokens" if layout != "layers-down" else "'*' marks each column's peak"
    parts.append(f"{marks}. {result.seconds:.1f} s.")
    return "\n".join(parts) + "\n"


def to_npz(result, directory: str, known_id=0, input_ids=None) -> list[str]:
    """The trace as ROME's per-case files, knowledge_{known_id}{'',_mlp,_attn}.npz (tracer.sweeps.npz)."""
    from .sweeps.npz import trace_to_npz

    return trace_to_npz(result, directory, known_id=known_id, input_ids=input_ids)
