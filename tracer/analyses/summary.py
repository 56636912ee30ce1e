"""A trace in a few numbers: per grid (kind) the peak, the top layers and the early/middle/late
means, with the total effect. The CLI prints it under the grids and writes it as JSON `summary`;
the app shows it beside the grid.

Conventions, the same for every grid:

- **Metric.** Recovery % when the result has it (`recovery_available`: the total effect
  p_clean - p_corrupted is at least guards.MIN_TOTAL_EFFECT); otherwise P(target). `metric` says
  which, and `metric_note` why.
- **Peak.** The cell with the largest value over the whole grid (rows x layers; cells without a
  value are skipped; on a tie the first row, then the first layer).
- **Profile.** The top layers and the thirds are read from one row: the peak's row (for positions
  "all", the token whose restoration helps most; otherwise the grid's one row of restored
  positions). The profile is that token's curve over the layers, as the seed tutorial reads one
  patched position's curve.
- **Top layers.** The profile's layers by value, largest first (ties: lower layer first).
- **Thirds.** The layers split as the tutorial splits them: early = [0, L//3), middle =
  [L//3, 2L//3), late = [2L//3, L); each third's mean over the profile (None when it is empty
  or holds no values).
- **Sites (the headline).** The paper reads two sites (docs/method.md): the *subject site*, the
  largest cell among the rows that restore a subject token (the early site), and the *late site*,
  the largest cell among the rows that restore the last token. Neither may be a cell that says
  nothing: a *trivial* cell (hidden, the last token, the last `trivial_layers(L)` layers: restoring
  the final state restores the output by construction) or a cell *within noise* (noise mode: the
  95% interval of P(target) holds p_corrupted). The summary's `headline` names the largest subject
  site and late site over the kinds; `peak` stays the plain maximum of the grid. A running trace
  (the app's live grid, as a PartialTrace of the cells done so far) is read by the same rules.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np

from ..guards import MIN_TOTAL_EFFECT, leading_warnings, warning_code
from ..metrics import METRICS
from ..render.tokens import show_token

PROFILE = "peak-row"


def _float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class PartialTrace:
    """A running trace's cells so far, as plain lists: what the headline rules (find_site,
    headline_cells) read of a TraceResult, for a trace that has none yet (the app's live grid).
    The fields mean what TraceResult's do."""

    tokens: list[str]
    subject_range: tuple[int, int]
    positions: object  # "all", or the restored positions (one grid row)
    corrupted_prob: float
    grids: dict  # kind -> {metric: rows x layers, None where no value yet}; "prob_low"/"prob_high" with noise

    def grid(self, kind: str, metric: str = "prob") -> np.ndarray:
        """One grid as a float64 array [rows, layers], NaN where no value yet."""
        rows = self.grids[kind][metric]
        return np.array([[np.nan if v is None else v for v in row] for row in rows],
                        dtype=np.float64).reshape(len(rows), -1)


def sites_line(result, kinds, metric: str, *, so_far: bool = False) -> str:
    """The headline (headline_text) over `kinds`, in `metric`: of a TraceResult, or with `so_far` of a
    running trace's PartialTrace ("subject site so far: ..."). "" when none of the kinds is traced."""
    grids = {k: {"subject_site": find_site(result, k, metric, "subject"),
                 "late_site": find_site(result, k, metric, "late"),
                 "left_out": headline_cells(result, k)[1]} for k in kinds if k in result.grids}
    if not grids:
        return ""
    return headline(result, grids, metric, so_far=so_far)["text"]


def summary_metric(result) -> tuple[str, str]:
    """(the metric a summary reads, why): recovery when available, else prob."""
    if result.recovery_available and any(
            v is not None for grid in result.grids.values() for row in grid["recovery"] for v in row):
        return "recovery", "recovery %"
    gap = result.clean_prob - result.corrupted_prob
    return "prob", f"P(target), as recovery % is not available (total effect {gap:.4f} < {MIN_TOTAL_EFFECT})"


def thirds(n_layers: int) -> dict[str, list[int]]:
    """The layers of each third, as the tutorial splits them: {"early": [...], "middle": [...], "late": [...]}."""
    a, b = n_layers // 3, 2 * n_layers // 3
    return {"early": list(range(0, a)), "middle": list(range(a, b)), "late": list(range(b, n_layers))}


def row_positions(result, row: int) -> list[int]:
    """The token indices a grid row restores."""
    return [row] if result.positions == "all" else list(result.positions)


def summarize_grid(result, kind: str, metric: str, *, top: int = 3) -> dict:
    """The summary of one grid (see the module docstring).

    Args:
        result: a TraceResult.
        kind: one of result.grids.
        metric: "recovery" or "prob" (summary_metric), or "logit_diff".
        top: how many top layers to list.

    Returns:
        {"peak": {"row", "tokens", "token", "text", "layer", "value", "prob"} or None (no cell has a
        value), "top_layers": [{"layer", "value"}], "thirds": {name: {"layers": [first, last] or [],
        "mean"}}, "total_effect"}. "tokens" are the indices the peak row restores; "token" is the
        one index when it restores one, else None; "text" their texts joined by "+".
    """
    values = result.grid(kind, metric)
    n_layers = values.shape[1]
    out = {"peak": None, "top_layers": [], "thirds": {}, "total_effect": result.clean_prob - result.corrupted_prob}
    finite = np.isfinite(values)
    profile = np.full(n_layers, np.nan)
    if finite.any():
        row, layer = np.unravel_index(int(np.argmax(np.where(finite, values, -np.inf))), values.shape)
        row, layer = int(row), int(layer)
        tokens = row_positions(result, row)
        out["peak"] = {
            "row": row, "tokens": tokens, "token": tokens[0] if len(tokens) == 1 else None,
            "text": "+".join(result.tokens[p] for p in tokens), "layer": layer,
            "value": _float(values[row, layer]), "prob": _float(result.grid(kind, "prob")[row, layer]),
        }
        profile = values[row]
        ranked = sorted((layer for layer in range(n_layers) if math.isfinite(profile[layer])),
                        key=lambda layer: -profile[layer])
        out["top_layers"] = [{"layer": layer, "value": _float(profile[layer])} for layer in ranked[:max(top, 0)]]
    for name, layers in thirds(n_layers).items():
        part = profile[layers] if layers else np.array([])
        part = part[np.isfinite(part)]
        out["thirds"][name] = {"layers": [layers[0], layers[-1]] if layers else [],
                               "mean": _float(part.mean()) if part.size else None}
    return out


def trivial_layers(n_layers: int) -> int:
    """How many last layers make restoring the last token's hidden state trivial: L // 6, at least 1
    (SmolLM2-135M's 30 layers: 25-29)."""
    return max(1, n_layers // 6)


def headline_cells(result, kind: str) -> tuple[np.ndarray, dict]:
    """(mask [rows, layers] of the cells that may be a site: a value, not trivial, not within noise;
    {"trivial": n, "within_noise": n} of the valued cells left out)."""
    prob = result.grid(kind, "prob")
    valued = np.isfinite(prob)
    trivial = np.zeros_like(valued)
    n_layers, last = prob.shape[1], len(result.tokens) - 1
    if kind == "hidden":
        for row in range(prob.shape[0]):
            if last in row_positions(result, row):
                trivial[row, n_layers - trivial_layers(n_layers):] = True
    noise = np.zeros_like(valued)
    if "prob_low" in result.grids[kind] and "prob_high" in result.grids[kind]:
        low, high = result.grid(kind, "prob_low"), result.grid(kind, "prob_high")
        with np.errstate(invalid="ignore"):
            noise = (low <= result.corrupted_prob) & (result.corrupted_prob <= high)
    keep = valued & ~trivial & ~noise
    return keep, {"trivial": int((valued & trivial).sum()), "within_noise": int((valued & noise & ~trivial).sum())}


def site_rows(result, site: str) -> list[int]:
    """The grid rows of a site: "subject" (rows restoring a subject token) or "late" (the last token)."""
    b, e = result.subject_range
    n_rows = len(result.tokens) if result.positions == "all" else 1
    if site == "subject":
        return [r for r in range(n_rows) if any(b <= p < e for p in row_positions(result, r))]
    last = len(result.tokens) - 1
    return [r for r in range(n_rows) if last in row_positions(result, r)]


def find_site(result, kind: str, metric: str, site: str) -> dict | None:
    """The largest headline cell (headline_cells) of `kind` among a site's rows (site_rows), as a
    peak ({"row", "tokens", "token", "text", "layer", "value", "prob"}); None when none is left."""
    values = result.grid(kind, metric)
    keep, _ = headline_cells(result, kind)
    rows = np.zeros(values.shape[0], dtype=bool)
    rows[site_rows(result, site)] = True
    allowed = keep & rows[:, None] & np.isfinite(values)
    if not allowed.any():
        return None
    row, layer = (int(i) for i in np.unravel_index(int(np.argmax(np.where(allowed, values, -np.inf))), values.shape))
    tokens = row_positions(result, row)
    return {"row": row, "tokens": tokens, "token": tokens[0] if len(tokens) == 1 else None,
            "text": "+".join(result.tokens[p] for p in tokens), "layer": layer,
            "value": _float(values[row, layer]), "prob": _float(result.grid(kind, "prob")[row, layer])}


def headline(result, grids: dict, metric: str, *, so_far: bool = False) -> dict:
    """The largest subject site and late site over the kinds ({..peak.., "kind"} or None each), the
    cells left out over all kinds, and the line the CLI and the app print (`so_far`: a running
    trace's, headline_text)."""
    out = {}
    for site in ("subject_site", "late_site"):
        found = [dict(g[site], kind=kind) for kind, g in grids.items() if g.get(site)]
        out[site] = max(found, key=lambda p: p["value"]) if found else None
    out["left_out"] = {k: sum(g["left_out"][k] for g in grids.values()) for k in ("trivial", "within_noise")}
    n_layers = len(result.grid(next(iter(result.grids)))[0])
    out["text"] = headline_text(out, metric, n_layers=n_layers, so_far=so_far)
    return out


def site_text(peak: dict | None, metric: str, *, so_far: bool = False) -> str:
    """"mlp layer 5 at ' Tower' (64.2%)" or "none above the noise" ("none yet" `so_far`)."""
    if peak is None:
        return "none yet" if so_far else "none above the noise"
    where = show_token(peak["text"])[:20] if peak["token"] is not None else f"tokens {'+'.join(map(str, peak['tokens']))}"
    kind = f"{peak['kind']} " if "kind" in peak else ""
    return f"{kind}layer {peak['layer']} at {where} ({_value(peak['value'], metric)})"


def headline_text(head: dict, metric: str, *, n_layers: int, so_far: bool = False) -> str:
    """"subject site: mlp layer 5 at ' Tower' (64.2%) · late site: hidden layer 20 at ' of' (81.0%)"
    and what was left out; `so_far`: a running trace's ("subject site so far: ...")."""
    when = " so far" if so_far else ""
    text = " · ".join(f"{name} site{when}: {site_text(head[key], metric, so_far=so_far)}"
                      for name, key in (("subject", "subject_site"), ("late", "late_site")))
    left = head["left_out"]
    notes = []
    if left["trivial"]:
        notes.append(f"{left['trivial']} trivial (hidden, last token, last {trivial_layers(n_layers)} layers)")
    if left["within_noise"]:
        notes.append(f"{left['within_noise']} within noise")
    return text + (f" · not headlines: {', '.join(notes)}" if notes else "")


def summarize(result, *, top: int = 3) -> dict:
    """A trace's summary: per grid the peak, the top layers, the thirds' means and the total effect.

    Args:
        result: a TraceResult.
        top: how many top layers each grid lists.

    Returns:
        {"metric": "recovery" | "prob", "metric_note": str, "profile": "peak-row",
        "total_effect": p_clean - p_corrupted, "p_clean", "p_corrupted",
        "grids": {kind: summarize_grid(...) with "subject_site", "late_site" (find_site) and
        "left_out" ({"trivial", "within_noise"} cell counts)}, "headline": headline(...), "flags": the
        codes of the warnings that void the reading (guards.LEADING_CODES; the text then names each
        grid's largest cell, not a peak)}.
    """
    metric, note = summary_metric(result)
    grids = {}
    for kind in result.grids:
        grids[kind] = summarize_grid(result, kind, metric, top=top)
        grids[kind]["subject_site"] = find_site(result, kind, metric, "subject")
        grids[kind]["late_site"] = find_site(result, kind, metric, "late")
        grids[kind]["left_out"] = headline_cells(result, kind)[1]
    return {
        "metric": metric,
        "metric_note": note,
        "profile": PROFILE,
        "total_effect": result.clean_prob - result.corrupted_prob,
        "p_clean": result.clean_prob,
        "p_corrupted": result.corrupted_prob,
        "grids": grids,
        "headline": headline(result, grids, metric),
        "flags": [warning_code(w) for w in leading_warnings(result.warnings)],
    }


def _value(v, metric: str) -> str:
    return "n/a" if v is None else METRICS[metric].short.format(v)


def summary_lines(summary: dict) -> list[str]:
    """The summary as text.

    Args:
        summary: what `summarize` returns.

    Returns:
        Lines, each within 100 columns: the metric and the total effect, then per grid its peak,
        top layers (wrapped) and the thirds' means.
    """
    metric = summary["metric"]
    row = "the largest cell's row" if summary.get("flags") else "the peak's row"
    lines = [f"summary - {summary['metric_note']}", *textwrap.wrap(
        f"total effect p_clean - p_corrupted = {summary['total_effect']:.4f}; top layers and means read along {row}",
        98, initial_indent="  ", subsequent_indent="  ")]
    if summary.get("headline"):
        lines += textwrap.wrap(summary["headline"]["text"], 98, initial_indent="  ", subsequent_indent="    ")
    for kind, s in summary["grids"].items():
        peak = s["peak"]
        if peak is None:
            lines.append(f"{kind}: no cell has a value")
            continue
        where = (f"token {peak['token']} {show_token(peak['text'])[:20]}" if peak["token"] is not None
                 else f"tokens {'+'.join(str(p) for p in peak['tokens'])}"[:40])
        if summary.get("flags"):  # a corruption that voids the reading: the largest cell is no peak
            lines.append(f"{kind}: largest {_value(peak['value'], metric)} at {where}, layer {peak['layer']} "
                         f"(not a peak: {', '.join(summary['flags'])})")
        else:
            lines.append(f"{kind}: peak {_value(peak['value'], metric)} at {where}, layer {peak['layer']}")
        if "subject_site" in s:
            lines.append(f"  subject site: {site_text(s['subject_site'], metric)}; "
                         f"late site: {site_text(s['late_site'], metric)}")
        if s["top_layers"]:
            lines += textwrap.wrap("top layers: " + ", ".join(
                f"{t['layer']} ({_value(t['value'], metric)})" for t in s["top_layers"]), 98,
                initial_indent="  ", subsequent_indent="    ")
        parts = []
        for name, third in s["thirds"].items():
            if third["layers"]:
                span = f"{third['layers'][0]}-{third['layers'][1]}"
                parts.append(f"{name} ({span}) {_value(third['mean'], metric)}")
        lines.append("  means: " + "   ".join(parts))
    return lines
