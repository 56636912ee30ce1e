"""A RobustnessResult as plain text (at most 100 columns): the table of peaks per corruption, one
peak-layer plot per kind (each corruption's peak marked on a layer axis) and the verdicts."""

from __future__ import annotations

import textwrap

NAME_WIDTH = 28
KIND_WIDTH = 17
TOKEN_WIDTH = 8
AXIS_WIDTH = 50  # at most this many columns for the layer axis
WIDTH = 100


def wrap(text: str) -> list[str]:
    """A long line as lines of at most WIDTH columns, continued lines indented by two spaces."""
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False) or [""]


def render(result) -> str:
    """The whole text report of `result` (a tracer.robustness.RobustnessResult)."""
    lines = header(result) + [""] + table(result) + [""]
    for kind in result.kinds:
        lines += peak_plot(result, kind) + [""]
    for text in [v.text for v in result.verdicts.values()] + [result.verdict]:
        lines += wrap(text)
    return "\n".join(lines) + "\n"


def header(result) -> list[str]:
    from .tokens import escape_controls

    clean = result.runs[0].clean_prob if result.runs else float("nan")
    positions = "all" if result.positions == "all" else ",".join(str(p) for p in result.positions)
    s = result.settings
    return wrap(escape_controls(f"robustness: {result.prompt!r} (subject {result.subject!r}), "
                                f"target {result.target_text!r} (clean P {clean:.3f})")) + [
        f"positions {positions}; samples {s['samples']}, seed {s['seed']}, window {s['window']}; "
        f"{len(result.runs)} corruptions",
        "peak: the subject site (largest P(target) restoring a subject token, cells within noise left out)",
        "  as token, layer, recovery % (P where recovery is n/a)",
    ] + [line for note in result.notes for line in wrap(f"note: {note}")]


def table(result) -> list[str]:
    """One row per corruption: P(target) corrupted, the total effect and each kind's peak."""
    head = f"{'corruption':<{NAME_WIDTH}} {'P corr':>7} {'effect':>7}" + "".join(
        f" {k[:KIND_WIDTH]:<{KIND_WIDTH}}" for k in result.kinds)
    lines = [head.rstrip(), "-" * len(head.rstrip())]
    for run in result.runs:
        row = f"{_clip(run.variant.name, NAME_WIDTH):<{NAME_WIDTH}} {run.corrupted_prob:7.3f} {run.total_effect:7.3f}"
        row += "".join(f" {_peak_cell(run.peaks.get(k)):<{KIND_WIDTH}}" for k in result.kinds)
        lines.append(row.rstrip() + (" !" if run.weak else ""))
    flagged = [f"{r.variant.name}: {', '.join(r.warnings)}" for r in result.runs if r.warnings]
    if flagged:
        lines.append("warnings:")
        lines += [line for text in flagged for line in wrap("  " + text)]
    if any(r.weak for r in result.runs):
        lines.append("!: the corruption barely changes the prediction (see the warnings)")
    return lines


def peak_plot(result, kind: str) -> list[str]:
    """Each corruption's peak layer on a layer axis: 'o' at the modal peak's token, 'x' at another
    token, '·' elsewhere; the peak's layer and token after the axis."""
    verdict = result.verdicts.get(kind)
    n = result.n_layers
    width = min(n, AXIS_WIDTH)
    modal = verdict.peak if verdict is not None else None
    title = f"{kind}: peak layer under each corruption"
    if modal is not None:
        title += f" (o: at {_show(modal.token)}, x: at another token)"
    ruler = [" "] * width
    for layer in sorted({0, n // 2, n - 1}):
        label = str(layer)
        at = min(_column(layer, n, width), width - len(label))
        ruler[at:at + len(label)] = label
    lines = [title, f"{'layer':<{NAME_WIDTH}} {''.join(ruler)}"]
    for run in result.runs:
        axis = ["·"] * width
        peak = run.peaks.get(kind)
        tail = "no site above the noise"
        if peak is not None:
            axis[_column(peak.layer, n, width)] = "o" if modal is not None and peak.positions == modal.positions else "x"
            tail = f"L{peak.layer} {_show(peak.token, 12)}"
        lines.append(f"{_clip(run.variant.name, NAME_WIDTH):<{NAME_WIDTH}} {''.join(axis)}  {tail}")
    return lines


def _column(layer: int, n_layers: int, width: int) -> int:
    return 0 if n_layers <= 1 else round(layer * (width - 1) / (n_layers - 1))


def _peak_cell(peak) -> str:
    if peak is None:
        return "n/a"
    value = f"{peak.recovery:.0f}%" if peak.recovery is not None else f"P{peak.prob:.2f}"
    return f"{_show(peak.token, TOKEN_WIDTH)} L{peak.layer} {value}"


def _show(token: str, limit: int = 16) -> str:
    from .tokens import show_token

    return _clip(show_token(token), limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
