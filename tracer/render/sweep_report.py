"""A sweep's results -> the paper's average indirect effect, as text, CSV or JSON.

Reads a results file (JSON Lines, tracer.sweeps.results) or a directory of ROME's
per-case .npz files (tracer.sweeps.npz), averages with tracer.sweeps.stats (ROME's
pooled statistics by default, or per-fact averaging) and renders the curves,
a table per kind and ROME's AIE heatmap (clipped at 0) as a text strip.
"""

from __future__ import annotations

import csv
import io
import math

from ..errors import InputError
from ..sweeps.aggregate import SweepReport
from ..sweeps.stats import (
    AGGREGATE_NAMES,
    GROUP_LABELS,
    GROUPS,
    INTERVAL_METHOD,
    THIRDS,
    Curve,
)

PLAIN_MARKERS = dict(zip(GROUPS, "fmSnrL"))  # without colour, each curve is drawn with its own letter
HEAT_CHARS = " .:-=+*#%@"  # 0 .. vmax, ten steps


# ---- rendering ----------------------------------------------------------------------------


def _f(x, width: int = 8, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(width)
    return f"{x:{width}.{digits}f}"


def summary_lines(report: SweepReport) -> list[str]:
    c = report.config
    pairs = c.get("mode") == "substitution"  # prompt pairs: no noise, one run each
    shown = ("kinds", "window", "filter") if pairs else ("kinds", "samples", "noise", "window", "seed", "filter")
    settings = ", ".join(
        f"{k} {','.join(v) if isinstance(v, list) else v}"
        for k, v in c.items()
        if k in shown
    ) + (", corruption: substitution (prompt pairs)" if pairs else "")
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(report.skipped_by_reason.items()))
    lines = [
        f"Sweep {report.path}: model {c.get('model', '?')}; {settings}",
        f"Facts: {report.kept} traced, {report.skipped} skipped" + (f" ({reasons})" if reasons else ""),
        f"Aggregation: {report.aggregate}, {AGGREGATE_NAMES[report.aggregate]}",
        f"Intervals: {INTERVAL_METHOD}",
    ]
    if report.total_effect is not None:
        lines.append(
            f"Average total effect (p_clean - p_corrupted): {report.total_effect:.4f} ± {report.total_effect_std:.4f}"
            f"  (p_clean {report.clean_prob:.4f}, p_corrupted = baseline {report.corrupted_prob:.4f})"
        )
    flagged = {r.split(":", 1)[1]: n for r, n in sorted(report.skipped_by_reason.items()) if r.startswith("flagged:")}
    skip = c.get("skip_flagged") or []
    if skip or flagged:
        lines.append(f"Left out as flagged (--skip-flagged {','.join(skip) or 'none'}): {sum(flagged.values())} fact(s)"
                     + (" (" + ", ".join(f"{code} {n}" for code, n in flagged.items()) + ")" if flagged else ""))
    if report.guard_counts:
        counts = ", ".join(f"{code} {n}" for code, n in report.guard_counts.items())
        lines.append(f"Guards (kept facts whose trace warned, by code; see tracer/guards.py): {counts}")
    no_g4 = max((st.no_first_subsequent for st in report.stats.values()), default=0)
    if no_g4:
        lines.append(f"{no_g4} fact(s) end with their subject: no first subsequent token, left out of that group")
    for kind in report.kinds:
        curve = report.curves[kind]["last_subject"]
        if curve.peak_layer is not None:
            e, m, l_ = curve.thirds
            p = curve.peak_layer
            lines.append(
                f"{kind}: last subject token peaks at layer {p} (AIE {curve.peak:.4f}, 95% interval "
                f"[{_f(curve.low[p], 0)}, {_f(curve.high[p], 0)}]); "
                f"thirds early {_f(e, 0)} / middle {_f(m, 0)} / late {_f(l_, 0)}"
            )
    return lines


def _nanmax(values) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else None


def _count_label(c: Curve) -> str:
    """The samples behind a curve: one number, or the range when empty cells make it vary by layer."""
    lo, hi = min(c.count, default=0), max(c.count, default=0)
    return str(c.n) if lo == hi == c.n else f"{lo}-{hi}"


def rome_summary_lines(report: SweepReport, kind: str) -> list[str]:
    """The numbers ROME's notebook prints for a kind (docs/method.md#d56-summary-numbers)."""
    st, curves = report.stats[kind], report.curves[kind]
    if not st.facts:
        return [f"{kind}: no kept facts"]
    out = [f"{kind}, over {st.facts} prompts: Average Total Effect {st.total_effect:.4f}"]
    for group, label in (("last_subject", "last subject"), ("last", "last token")):
        c = curves[group]
        if c.peak_layer is not None:
            out.append(
                f"  best average indirect effect on {label}: {c.peak:.4f} (layer {c.peak_layer}); "
                f"max score there {_f(_nanmax(c.score), 0)}"
            )
    out.append(
        f"  average best-fixed score {st.best_fixed:.4f}; at the last subject token {st.best_fixed_last_subject:.4f}; "
        f"at the last token {st.best_fixed_last:.4f}"
    )
    return out


def table_text(report: SweepReport, kind: str) -> str:
    """Layers x token groups: the indirect effect ± the half-width of its 95% interval (ROME's
    line-plot band), then n, the peak layer and the thirds."""
    curves = report.curves[kind]
    head = ["layer"] + [GROUP_LABELS[g] for g in GROUPS]
    widths = [5] + [max(17, len(h)) for h in head[1:]]
    if report.aggregate == "rome":
        title = (f"{kind}: average indirect effect (pooled P(target) - baseline {_f(report.stats[kind].baseline, 0)}) "
                 "± 95% interval half-width (1.96 x population std of the pooled raw P(target) / sqrt(n), ROME's band); "
                 "n = token rows pooled")
    else:
        title = (f"{kind}: average indirect effect (p_patched - p_corrupted) ± 95% interval half-width "
                 "(1.96 x std over facts / sqrt(n)); n = facts (per-fact, not ROME's)")
    out = [title]
    out.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    out.append("  ".join("-" * w for w in widths))
    for layer in range(report.n_layers):
        cells = [str(layer).rjust(widths[0])]
        for g, w in zip(GROUPS, widths[1:]):
            c = curves[g]
            half = (c.high[layer] - c.low[layer]) / 2 if c.n else math.nan
            cells.append((f"{_f(c.mean[layer], 7)} ± {_f(half, 6)}" if c.n else "-").rjust(w))
        out.append("  ".join(cells))
    out.append("  ".join("-" * w for w in widths))
    out.append("  ".join(["n".rjust(widths[0])] + [_count_label(curves[g]).rjust(w) for g, w in zip(GROUPS, widths[1:])]))
    out.append(
        "  ".join(
            ["peak".rjust(widths[0])]
            + [
                (f"L{curves[g].peak_layer} ({curves[g].peak:.4f})" if curves[g].peak_layer is not None else "-").rjust(w)
                for g, w in zip(GROUPS, widths[1:])
            ]
        )
    )
    for t, (name, (s, e)) in enumerate(zip(THIRDS, report.thirds)):
        label = f"{name} L{s}-{e - 1}"
        out.append(
            "  ".join([name[:5].rjust(widths[0])] + [_f(curves[g].thirds[t], w) for g, w in zip(GROUPS, widths[1:])])
            + f"   ({label})"
        )
    return "\n".join(out)


def peak_histogram_text(report: SweepReport, kind: str, *, bar: int = 10) -> str:
    """Per token group, how many facts' own curve (the mean of the fact's rows of the group)
    peaks at each layer: a text histogram, layers down, '#' bars scaled to each group's largest count."""
    curves = report.curves[kind]
    head = ["layer"] + [GROUP_LABELS[g] for g in GROUPS]
    widths = [5] + [max(bar + 6, len(h)) for h in head[1:]]
    tops = {g: max(curves[g].peak_counts, default=0) for g in GROUPS}
    out = [f"{kind}: per-fact peak layers (facts whose own curve is largest at each layer), by token group"]
    out.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    out.append("  ".join("-" * w for w in widths))
    for layer in range(report.n_layers):
        cells = [str(layer).rjust(widths[0])]
        for g, w in zip(GROUPS, widths[1:]):
            n = curves[g].peak_counts[layer] if curves[g].peak_counts else 0
            bars = "#" * (max(1, round(n / tops[g] * bar)) if n and tops[g] else 0)
            cells.append(f"{n:>4} {bars:<{bar}}".rjust(w) if tops[g] else "-".rjust(w))
        out.append("  ".join(cells).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out.append("  ".join(["facts".rjust(widths[0])] + [str(sum(curves[g].peak_counts)).rjust(w) for g, w in zip(GROUPS, widths[1:])]))
    modes = [f"L{curves[g].peak_counts.index(tops[g])}" if tops[g] else "-" for g in GROUPS]
    out.append("  ".join(["mode".rjust(widths[0])] + [m.rjust(w) for m, w in zip(modes, widths[1:])]))
    return "\n".join(out)


def heatmap_text(report: SweepReport, kind: str) -> str:
    """ROME's AIE heatmap as text: groups down, layers across, max(AIE, 0) from 0 to the shared vmax."""
    curves, vmax = report.curves[kind], report.vmax
    n = report.stats[kind].facts
    label = {"hidden": "h_i^(l)", "mlp": "MLP", "attn": "Attn"}.get(kind, kind)
    scale = f"vmin 0, vmax {_f(vmax, 0)}" + (f" (the {report.vmax_kind} kind's max)" if report.vmax_kind else "")
    out = [f"Avg Indirect Effect of {label} over {n} prompts: heatmap, AIE clipped at 0; '{HEAT_CHARS}' = 0 .. vmax, above vmax '@' ({scale})"]
    width = max(len(GROUP_LABELS[g]) for g in GROUPS)
    ticks = "".join(str(layer % 10) for layer in range(report.n_layers))
    out.append(" " * (width + 2) + ticks + "   (layer mod 10)")
    for g in GROUPS:
        c = curves[g]
        if not c.facts:
            out.append(GROUP_LABELS[g].rjust(width) + "  " + "-" * report.n_layers)
            continue
        steps = len(HEAT_CHARS) - 1
        cells = "".join(
            HEAT_CHARS[min(steps, max(0, round(h / vmax * steps)))] if vmax and vmax > 0 and not math.isnan(h) else HEAT_CHARS[0]
            for h in c.heat
        )
        out.append(GROUP_LABELS[g].rjust(width) + " |" + cells + f"|  max {_f(_nanmax(c.heat), 0)}")
    return "\n".join(out)


def plot_text(report: SweepReport, kind: str, *, width: int = 100, height: int = 22, color: bool = False) -> str:
    """A plotext line plot of the six group curves over layers."""
    import plotext

    plt = plotext  # the CLI renders one plot at a time; the TUI uses its widget's own instance
    plt.clear_figure()
    plt.plotsize(width, height)
    if not color:
        plt.theme("clear")
    layers = list(range(report.n_layers))
    for g in GROUPS:
        c = report.curves[kind][g]
        if c.n:
            marker = "braille" if color else PLAIN_MARKERS[g]
            plt.plot(layers, [0.0 if math.isnan(v) else v for v in c.mean], label=GROUP_LABELS[g], marker=marker)
    step = max(1, math.ceil(report.n_layers / 8))
    plt.xticks(sorted(set(range(0, report.n_layers, step)) | {report.n_layers - 1}))
    plt.title(f"{kind}: average indirect effect over {report.kept} facts")
    plt.xlabel("layer")
    text = plt.build()
    plt.clear_figure()
    if not color:
        text = plotext.uncolorize(text) if hasattr(plotext, "uncolorize") else text
    return text


def severed_text(report: SweepReport) -> str:
    """The paper's Figure 3 as a table: layers down, the ordinary and severed series across."""
    series = report.severed_paths
    names = list(series)
    labels = {"hidden": "single state"} | {n: n.replace("hidden-severed-", "") + " severed" for n in names[1:]}
    lines = ["Severed paths (the paper's Figure 3): average indirect effect of restoring one hidden state at the "
             "last subject token, with the MLP or attention outputs at that token above its layer held at their "
             "corrupted values (same noise draw; ROME's notebook draws those values from a second sample)",
             "layer" + "".join(f"{labels[n]:>16s}" for n in names)]
    for layer in range(report.n_layers):
        lines.append(f"{layer:5d}" + "".join(f"{series[n][layer]:16.4f}" for n in names))
    return "\n".join(lines)


def render_text(report: SweepReport, *, plots: bool = True, color: bool = False, width: int = 100) -> str:
    parts = ["\n".join(summary_lines(report))]
    for w in report.warnings:
        parts.append(f"warning: {w}")
    if report.kept and report.severed_paths is not None:
        parts.append(severed_text(report))
    if report.kept:
        for kind in report.kinds:
            parts.append("\n".join(rome_summary_lines(report, kind)))
            parts.append(table_text(report, kind))
            parts.append(peak_histogram_text(report, kind))
            parts.append(heatmap_text(report, kind))
            if plots and report.n_layers > 1:
                parts.append(plot_text(report, kind, width=width, color=color))
    return "\n\n".join(parts) + "\n"


def render_csv(report: SweepReport) -> str:
    """One row per (kind, group, layer): mean (the AIE), std, n, score (the raw average P),
    heatmap (max(AIE, 0)), low and high (the 95% interval), count (the samples behind this
    layer's mean) and peak_facts (facts whose own curve peaks at this layer); the aggregation,
    baseline, peaks and thirds are in the JSON format. A value that does not exist is empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "group", "layer", "mean", "std", "n", "score", "heatmap", "low", "high", "count", "peak_facts"])

    def cell(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)

    for kind in report.kinds:
        for g in GROUPS:
            c = report.curves[kind][g]
            for layer in range(report.n_layers):
                if not c.n:
                    w.writerow([kind, g, layer, "", "", 0, "", "", "", "", 0, 0])
                    continue
                w.writerow([kind, g, layer, cell(c.mean[layer]), cell(c.std[layer]), c.n, cell(c.score[layer]),
                            cell(c.heat[layer]), cell(c.low[layer]), cell(c.high[layer]), c.count[layer],
                            c.peak_counts[layer]])
    return buf.getvalue()


def render_json(report: SweepReport) -> str:
    """Strict JSON: a mean or std over no facts (NaN) and any other non-finite value is null."""
    from .export import dumps

    return dumps(report.to_dict(), indent=2) + "\n"


def render(report: SweepReport, fmt: str, *, color: bool = False) -> str:
    if fmt == "text":
        return render_text(report, color=color)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    raise InputError(f"unknown format {fmt!r}: choose text, csv or json")


# ---- by relation ----------------------------------------------------------------------------


def relations_text(reports: dict[str, SweepReport]) -> str:
    """A table, one row per relation: facts traced and skipped, p_clean, p_corrupted, the total
    effect, and per kind the last subject token's peak AIE and its layer."""
    kinds = next((r.kinds for r in reports.values() if r.kinds), [])
    first = next(iter(reports.values()))
    head = f"{'relation':<12} {'traced':>6} {'skipped':>7} {'p_clean':>8} {'p_corr':>8} {'effect':>8}"
    head += "".join(f"  {kind + ' peak (layer)':>22}" for kind in kinds)
    lines = [f"Sweep {first.path} by relation: {len(reports)} relations; aggregation {first.aggregate}, "
             "each relation its own baseline", "", head]
    for relation, r in reports.items():
        row = f"{relation:<12} {r.kept:>6} {r.skipped:>7} {_f(r.clean_prob)} {_f(r.corrupted_prob)} {_f(r.total_effect)}"
        for kind in kinds:
            c = r.curves.get(kind, {}).get("last_subject")
            peak = f"{c.peak:.4f} ({c.peak_layer})" if c is not None and c.peak_layer is not None else "-"
            row += f"  {peak:>22}"
        lines.append(row)
    return "\n".join(lines) + "\n"


def render_relations(reports: dict[str, SweepReport], fmt: str) -> str:
    """The by-relation report as text (relations_text), CSV (render_csv's rows, a relation column
    first) or JSON ({"by": "relation_id", "relations": {relation: report}})."""
    if fmt == "text":
        return relations_text(reports)
    if fmt == "csv":
        out = []
        for i, (relation, report) in enumerate(reports.items()):
            rows = render_csv(report).splitlines()
            out += (["relation," + rows[0]] if i == 0 else []) + [f"{_csv_cell(relation)},{row}" for row in rows[1:]]
        return "\n".join(out) + "\n"
    if fmt == "json":
        from .export import dumps

        return dumps({"by": "relation_id", "relations": {k: r.to_dict() for k, r in reports.items()}}, indent=2) + "\n"
    raise InputError(f"unknown format {fmt!r}: choose text, csv or json")


def _csv_cell(text: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()
