"""A TraceResult as text: the header (predictions, interval at the peak), the grids as tables that
fit 100 columns (tokens down in blocks of layers, or layers down with kinds across), the summary;
and the helpers that make any text safe for a terminal (escape_controls, show_token)."""

from __future__ import annotations

import math
import textwrap

from ..analyses.summary import summarize, summarize_grid, summary_lines, summary_metric
from ..guards import MIN_TOTAL_EFFECT, leading_warnings, warning_lines
from ..metrics import METRICS
from .tokens import escape_controls, show_token


def row_labels(result) -> list[tuple[int, str]]:
    """(token index, label) of each grid row."""
    if result.positions == "all":
        return [(i, t) for i, t in enumerate(result.tokens)]
    return [(p, result.tokens[p]) for p in result.positions]


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
    at = "the largest cell" if leading_warnings(result.warnings) else "the peak"
    return f"95% interval of P(target) at {at} ({kind}, {where}, layer {peak['layer']}): {prob:.4g} {half}"


def _alignment_lines(alignment: dict | None) -> list[str]:
    """Substitution with prompts of different lengths: the corrupted tokens and the clean tokens
    that have no counterpart (not restored)."""
    if not alignment or "corrupted_tokens" not in alignment:
        return []
    mapping = alignment.get("clean_to_corrupted") or []
    lines = ["corrupted tokens: " + " ".join(show_token(t) for t in alignment["corrupted_tokens"])
             + f" (shared prefix {alignment.get('prefix')}, suffix {alignment.get('suffix')} tokens)"]
    missing = [i for i, j in enumerate(mapping) if j is None]
    if missing:
        lines.append(f"clean tokens without a counterpart (not restored): {compact_positions(missing)}")
    return lines


def header(result) -> str:
    """The text output's header.

    Args:
        result: a TraceResult.

    Returns:
        Lines (joined by newlines, wrapped at WIDTH): model, prompt and subject, target (and its
        tokens when several), P(target) clean and corrupted with the total effect, the corruption
        (with the alignment in substitution), the interval at the peak (noise mode) and the two
        runs' top-k predictions side by side.
    """
    lines = [
        f"model: {escape_controls(result.model)}",
        f"prompt: {result.request.prompt!r}  subject: {result.request.subject!r} "
        f"(tokens {result.subject_range[0]}..{result.subject_range[1] - 1})",
        f"target: {escape_controls(repr(result.target_text))} (id {result.target_id})",
        f"clean P(target) = {result.clean_prob:.4f}   corrupted P(target) = {result.corrupted_prob:.4f}   "
        f"total effect = {result.clean_prob - result.corrupted_prob:.4f}",
    ]
    if len(result.target_tokens) > 1:
        lines.append("target tokens, P clean/corrupted: " + " x ".join(
            f"{show_token(t['text'])} {t['clean_prob']:.4f}/{t['corrupted_prob']:.4f}" for t in result.target_tokens))
    if result.corruption == "noise":
        req = result.request
        how = "replacing the subject embeddings" if req.replace else "added to the subject embeddings"
        lines.append(f"corruption: noise {req.noise_rule.describe(result.noise_std)}, {how}, "
                     f"{req.samples} samples, seed {req.seed}")
    else:
        lines.append(f"corruption: substitution with {result.request.corrupted_prompt!r}")
        lines += _alignment_lines(result.alignment)
    interval = _peak_interval(result)
    if interval:
        lines.append(interval)
    lines = [wrapped for line in lines for wrapped in
             (textwrap.wrap(line, WIDTH, subsequent_indent="  ", break_on_hyphens=False) or [""])]
    if result.clean_top or result.corrupted_top:
        lines += _top_table(result)
    return "\n".join(lines)


def cell_text(value, metric: str, width: int = CELL - 1) -> str:
    """One table cell.

    Args:
        value: the cell's value, or None (no value).
        metric: its metric (METRICS[metric].cell is the format).
        width: the cell's width.

    Returns:
        The value in the metric's format, right-aligned to `width`; without decimals, then in
        exponent form, when it would not fit; "n/a" for None.
    """
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


def compact_positions(positions) -> str:
    """Token indices as ranges: [0, 1, 2, 5, 6, 7] -> "0-2,5-7"."""
    runs: list[list[int]] = []
    for p in sorted(positions):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def grid_table(result, kind: str, metric: str = "recovery") -> str:
    """One grid as a table: tokens down, layers across.

    Args:
        result: a TraceResult.
        kind: the grid (one of result.grids).
        metric: the metric shown.

    Returns:
        A title line, then blocks of layer columns (as many as fit WIDTH columns, a blank line
        between blocks), each a header of layer numbers and one line per row; subject rows are
        marked with '*', token labels cut at LABEL_MAX, cells without a value show "n/a".
    """
    grid = result.grids[kind][metric]
    labels = row_labels(result)
    if result.positions != "all":
        together = (" + ".join(show_token(t) for _, t in labels) if len(labels) <= 3
                    else f"tokens {compact_positions(result.positions)}")
        labels = [(-1, _cut(together, LABEL_MAX + 4))]
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
    each column's largest value.

    Args:
        result: a TraceResult.
        metric: the metric shown (and by which each kind's peak is found).

    Returns:
        The table as text: a title, the row each kind is read along, a header, one line per layer.
    """
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


def warning_block(result) -> list[str]:
    """The text output's first lines: every warning ("warning [code]: message", wrapped), the ones
    that void the reading (guards.LEADING_CODES) first and followed by a line saying that no peak is
    named; then a blank line. [] for a trace without warnings."""
    if not result.warnings:
        return []
    lines = [wrapped for line in warning_lines(result.warnings) for wrapped in
             textwrap.wrap(escape_controls(line), WIDTH, subsequent_indent="  ", break_on_hyphens=False)]
    if leading_warnings(result.warnings):
        lines.append("so no peak is named: the grids below are this corruption's numbers, not a location of the fact")
    return lines + [""]


def estimate_error_lines(result) -> list[str]:
    """How far a progressive trace's first-order estimate was from the exact grids
    (TraceResult.estimate_error): the correlation per kind, then each kind's largest error and
    where, e.g. "  mlp: 'iffel' layer 2: estimated 0.074, exact 0.386". [] without one."""
    errors = result.estimate_error or {}
    if not errors:
        return []
    r = " · ".join(f"{kind} {'n/a' if e['correlation'] is None else format(e['correlation'], '.3f')}"
                   for kind, e in errors.items())
    lines = [f"first-order estimate vs exact P(target): correlation {r}; largest errors:"]
    for kind, e in errors.items():
        if e["largest"]:
            w = e["largest"][0]
            where = show_token(w["token"]) if w["token"] is not None else f"row {w['row']}"
            lines.append(f"  {kind}: {where} layer {w['layer']}: estimated {w['estimate']:.3f}, exact {w['exact']:.3f}")
    return lines


def to_text(result, metric: str = "recovery", *, layout: str = "tokens-down", top: int = 3,
            extra_lines: list[str] | None = None, warnings_first: bool = True) -> str:
    """The text output: header, the grids (or the layers-down table), the summary, any extra lines.

    Args:
        result: a TraceResult.
        metric: the metric shown; "recovery" without recovery available shows P(target) instead
            (saying so), since probabilities are always shown.
        layout: "tokens-down" (one table per kind, tokens down, layers across, in blocks of
            layers fitting 100 columns) or "layers-down" (layers down, kinds across).
        top: how many top layers the summary lists per kind.
        extra_lines: more lines after the summary (the CLI's --inspect).
        warnings_first: begin with the warnings (warning_block); False where the caller has
            already put them first (the app's export, above its drawing).

    Returns:
        The text, ending with a newline.
    """
    parts = [*(warning_block(result) if warnings_first else []), header(result), ""]
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
    if result.estimate_error:
        parts += [*estimate_error_lines(result), ""]
    if extra_lines:
        parts += [*extra_lines, ""]
    marks = "'*' marks subject tokens" if layout != "layers-down" else "'*' marks each column's peak"
    parts.append(f"{marks}. {result.seconds:.1f} s.")
    return "\n".join(parts) + "\n"
