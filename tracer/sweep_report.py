"""A sweep's results -> the paper's average indirect effect, as text, CSV or JSON.

Indirect effect of a cell, per fact: p_patched - p_corrupted (probability of the
target with that state restored, minus the corrupted run's). Total effect per
fact: p_clean - p_corrupted. Averages are over kept facts; std is the
population std (ddof=0) over the same facts, as ROME's notebook computes it.

Token groups of a fact with T tokens and subject tokens [b, e):
    first subject      b
    middle subject     b+1 .. e-2, averaged per fact (facts whose subject has < 3 tokens add nothing)
    last subject       e-1
    first subsequent   e, only when e < T-1 (otherwise it is the last token)
    further tokens     e+1 .. T-2, averaged per fact
    last token         T-1
A one-token subject counts as both first and last subject token, and a subject
ending the prompt puts its last token in both "last subject" and "last token",
as in the paper. ROME's notebook pools the middle and further tokens (each token
one sample); here each fact weighs once in every group.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, read_user_file

GROUPS = ("first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last")
GROUP_LABELS = {
    "first_subject": "first subject",
    "middle_subject": "middle subject",
    "last_subject": "last subject",
    "first_subsequent": "first subsequent",
    "further": "further tokens",
    "last": "last token",
}
THIRDS = ("early", "middle", "late")
PLAIN_MARKERS = dict(zip(GROUPS, "fmSnrL"))  # without colour, each curve is drawn with its own letter


def token_groups(n_tokens: int, subject_range) -> dict[str, list[int]]:
    """Token positions of each group for one fact (see the module docstring)."""
    b, e = int(subject_range[0]), int(subject_range[1])
    T = n_tokens
    return {
        "first_subject": [b],
        "middle_subject": list(range(b + 1, e - 1)),
        "last_subject": [e - 1],
        "first_subsequent": [e] if e < T - 1 else [],
        "further": list(range(e + 1, T - 1)),
        "last": [T - 1],
    }


def layer_thirds(n_layers: int) -> list[tuple[int, int]]:
    """[start, end) of the early, middle and late thirds (numpy.array_split sizes)."""
    sizes = [len(a) for a in np.array_split(np.arange(n_layers), 3)]
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


@dataclass
class Curve:
    mean: list[float]
    std: list[float]
    n: int  # facts contributing
    peak_layer: int | None  # argmax of mean
    peak: float | None
    thirds: list[float | None]  # mean of `mean` over the early, middle, late layers


@dataclass
class SweepReport:
    path: str
    config: dict
    n_layers: int
    kinds: list[str]
    kept: int
    skipped: int
    skipped_by_reason: dict[str, int]
    total_effect: float | None
    total_effect_std: float | None
    clean_prob: float | None
    corrupted_prob: float | None
    curves: dict[str, dict[str, Curve]] = field(default_factory=dict)  # kind -> group -> curve
    thirds: list[tuple[int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "config": self.config,
            "n_layers": self.n_layers,
            "kinds": self.kinds,
            "facts": {"kept": self.kept, "skipped": self.skipped, "skipped_by_reason": self.skipped_by_reason},
            "total_effect": {"mean": self.total_effect, "std": self.total_effect_std},
            "clean_prob": self.clean_prob,
            "corrupted_prob": self.corrupted_prob,
            "groups": list(GROUPS),
            "thirds": {name: list(span) for name, span in zip(THIRDS, self.thirds)},
            "indirect_effect": {
                kind: {
                    group: {
                        "mean": c.mean,
                        "std": c.std,
                        "n": c.n,
                        "peak_layer": c.peak_layer,
                        "peak": c.peak,
                        "thirds": dict(zip(THIRDS, c.thirds)),
                    }
                    for group, c in groups.items()
                }
                for kind, groups in self.curves.items()
            },
            "warnings": self.warnings,
        }


# ---- reading ----------------------------------------------------------------------------


def read_results(path: str) -> tuple[list[dict], list[str]]:
    """Every result line of a sweep file. A torn last line (a sweep still writing, or
    killed) is left out with a warning; a bad line elsewhere is an InputError."""
    data = read_user_file(path, "results file")
    records, warnings = [], []
    segments, offset = [], 0  # (line number, bytes, ends with a newline) of each non-blank line
    for i, raw in enumerate(data.split(b"\n")):
        if raw.strip():
            segments.append((i + 1, raw, offset + len(raw) < len(data)))
        offset += len(raw) + 1
    for n, (line_no, raw, complete) in enumerate(segments):
        try:
            obj = json.loads(raw.decode("utf-8"))
            ok = complete and isinstance(obj, dict) and obj.get("status") in ("kept", "skipped")
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if not ok:
            if n == len(segments) - 1:
                warnings.append(f"line {line_no} is incomplete (a sweep still running, or interrupted): left out")
                break
            raise InputError(f"{path} line {line_no} is not a sweep result line")
        records.append(obj)
    return records, warnings


class ResultsTail:
    """Follows a results file that a sweep may still be appending to: `poll()` returns the
    records of the complete lines added since the last call (reading only the new bytes).
    A file that shrank or was replaced starts over (`reset` is then True)."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.records: list[dict] = []
        self.bad_lines = 0
        self._ident = None

    def poll(self) -> tuple[list[dict], bool]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return [], False
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        reset = False
        ident = (st.st_dev, st.st_ino)
        if st.st_size < self.offset or (self._ident is not None and ident != self._ident):
            self.offset, self.records, self.bad_lines, reset = 0, [], 0, True
        self._ident = ident
        if st.st_size == self.offset:
            return [], reset
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(st.st_size - self.offset)
        except IsADirectoryError:
            raise InputError(f"results file is a directory: {self.path}") from None
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        end = data.rfind(b"\n") + 1  # only complete lines; a torn one waits for its newline
        new = []
        for raw in data[:end].split(b"\n"):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                obj = None
            if isinstance(obj, dict) and obj.get("status") in ("kept", "skipped"):
                new.append(obj)
            else:
                self.bad_lines += 1
        self.offset += end
        self.records += new
        return new, reset


# ---- aggregation --------------------------------------------------------------------------


class _Acc:
    def __init__(self, n_layers: int):
        self.rows: list[np.ndarray] = []
        self.n_layers = n_layers

    def add(self, row: np.ndarray) -> None:
        self.rows.append(row)

    def curve(self, thirds) -> Curve:
        if not self.rows:
            nan = [math.nan] * self.n_layers
            return Curve(nan, nan, 0, None, None, [None, None, None])
        a = np.stack(self.rows)
        mean, std = a.mean(axis=0), a.std(axis=0)
        peak = int(np.argmax(mean))
        return Curve(
            [float(x) for x in mean],
            [float(x) for x in std],
            len(self.rows),
            peak,
            float(mean[peak]),
            [float(mean[s:e].mean()) if e > s else None for s, e in thirds],
        )


def aggregate(records: list[dict], path: str = "") -> SweepReport:
    """The average indirect effect curves of the kept facts in `records`."""
    kept = [r for r in records if r.get("status") == "kept"]
    skipped = [r for r in records if r.get("status") == "skipped"]
    by_reason: dict[str, int] = {}
    for r in skipped:
        by_reason[r.get("skipped") or "?"] = by_reason.get(r.get("skipped") or "?", 0) + 1
    config = (records[0].get("config") if records else None) or {}
    warnings: list[str] = []
    kinds: list[str] = list(config.get("kinds") or [])
    n_layers = 0
    for r in kept:
        try:
            grids = r["grids"]
            first = grids[next(iter(grids))]["prob"]
            n_layers = len(first[0])
            if not kinds:
                kinds = list(grids)
            break
        except (KeyError, TypeError, StopIteration, IndexError):
            continue
    thirds = layer_thirds(n_layers) if n_layers else []
    accs = {k: {g: _Acc(n_layers) for g in GROUPS} for k in kinds}
    totals, cleans, corrupts = [], [], []
    for r in kept:
        try:
            tokens, (b, e) = r["tokens"], r["subject_range"]
            p_clean, p_corrupt = float(r["clean_prob"]), float(r["corrupted_prob"])
            grids = {k: np.asarray(r["grids"][k]["prob"], dtype=np.float64) for k in kinds}
        except (KeyError, TypeError, ValueError):
            warnings.append(f"known_id {r.get('known_id')!r}: incomplete result line, left out")
            continue
        T = len(tokens)
        if any(g.shape != (T, n_layers) for g in grids.values()) or not 0 <= b < e <= T:
            warnings.append(f"known_id {r.get('known_id')!r}: grid shape does not match its tokens, left out")
            continue
        totals.append(p_clean - p_corrupt)
        cleans.append(p_clean)
        corrupts.append(p_corrupt)
        groups = token_groups(T, (b, e))
        for kind, grid in grids.items():
            effect = grid - p_corrupt
            for group, positions in groups.items():
                if positions:
                    accs[kind][group].add(effect[positions].mean(axis=0))
    curves = {k: {g: acc.curve(thirds) for g, acc in groups.items()} for k, groups in accs.items()}

    def mean(xs):
        return float(np.mean(xs)) if xs else None

    return SweepReport(
        path=path,
        config=config,
        n_layers=n_layers,
        kinds=kinds,
        kept=len(totals),
        skipped=len(skipped),
        skipped_by_reason=by_reason,
        total_effect=mean(totals),
        total_effect_std=float(np.std(totals)) if totals else None,
        clean_prob=mean(cleans),
        corrupted_prob=mean(corrupts),
        curves=curves,
        thirds=thirds,
        warnings=warnings,
    )


def load_report(path: str) -> SweepReport:
    records, warnings = read_results(path)
    if not records:
        raise InputError(f"{path} holds no sweep results")
    report = aggregate(records, path)
    report.warnings = warnings + report.warnings
    return report


# ---- rendering ----------------------------------------------------------------------------


def _f(x, width: int = 8, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(width)
    return f"{x:{width}.{digits}f}"


def summary_lines(report: SweepReport) -> list[str]:
    c = report.config
    settings = ", ".join(
        f"{k} {','.join(v) if isinstance(v, list) else v}" for k, v in c.items() if k in ("kinds", "samples", "noise", "window", "seed")
    )
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(report.skipped_by_reason.items()))
    lines = [
        f"Sweep {report.path}: model {c.get('model', '?')}; {settings}",
        f"Facts: {report.kept} traced, {report.skipped} skipped" + (f" ({reasons})" if reasons else ""),
    ]
    if report.total_effect is not None:
        lines.append(
            f"Average total effect (p_clean - p_corrupted): {report.total_effect:.4f} ± {report.total_effect_std:.4f}"
            f"  (p_clean {report.clean_prob:.4f}, p_corrupted {report.corrupted_prob:.4f})"
        )
    for kind in report.kinds:
        curve = report.curves[kind]["last_subject"]
        if curve.peak_layer is not None:
            e, m, l_ = curve.thirds
            lines.append(
                f"{kind}: last subject token peaks at layer {curve.peak_layer} (AIE {curve.peak:.4f}); "
                f"thirds early {_f(e, 0)} / middle {_f(m, 0)} / late {_f(l_, 0)}"
            )
    return lines


def table_text(report: SweepReport, kind: str) -> str:
    """Layers x token groups: mean ± std of the indirect effect, then peak layer and thirds."""
    curves = report.curves[kind]
    head = ["layer"] + [GROUP_LABELS[g] for g in GROUPS]
    widths = [5] + [max(17, len(h)) for h in head[1:]]
    out = [f"{kind}: average indirect effect (p_patched - p_corrupted), mean ± std over facts"]
    out.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    out.append("  ".join("-" * w for w in widths))
    for layer in range(report.n_layers):
        cells = [str(layer).rjust(widths[0])]
        for g, w in zip(GROUPS, widths[1:]):
            c = curves[g]
            cells.append((f"{_f(c.mean[layer], 7)} ± {_f(c.std[layer], 6)}" if c.n else "-").rjust(w))
        out.append("  ".join(cells))
    out.append("  ".join("-" * w for w in widths))
    out.append("  ".join(["n".rjust(widths[0])] + [str(curves[g].n).rjust(w) for g, w in zip(GROUPS, widths[1:])]))
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


def render_text(report: SweepReport, *, plots: bool = True, color: bool = False, width: int = 100) -> str:
    parts = ["\n".join(summary_lines(report))]
    for w in report.warnings:
        parts.append(f"warning: {w}")
    if report.kept:
        for kind in report.kinds:
            parts.append(table_text(report, kind))
            if plots and report.n_layers > 1:
                parts.append(plot_text(report, kind, width=width, color=color))
    return "\n\n".join(parts) + "\n"


def render_csv(report: SweepReport) -> str:
    """One row per (kind, group, layer): mean, std, n; peak and thirds in the JSON format."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "group", "layer", "mean", "std", "n"])
    for kind in report.kinds:
        for g in GROUPS:
            c = report.curves[kind][g]
            for layer in range(report.n_layers):
                w.writerow([kind, g, layer, repr(c.mean[layer]) if c.n else "", repr(c.std[layer]) if c.n else "", c.n])
    return buf.getvalue()


def _json_safe(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def render_json(report: SweepReport) -> str:
    return json.dumps(_json_safe(report.to_dict()), indent=2) + "\n"


def render(report: SweepReport, fmt: str, *, color: bool = False) -> str:
    if fmt == "text":
        return render_text(report, color=color)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    raise InputError(f"unknown format {fmt!r}: choose text, csv or json")
