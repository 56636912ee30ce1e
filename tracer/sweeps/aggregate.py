"""A sweep's records -> its report (SweepReport): the kept facts' cases per kind, averaged by
tracer.sweeps.stats (see there for the statistics), the fact-level numbers, the heatmap's
shared scale and the guards' counts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..settings import KINDS, severed_name
from .npz import read_npz_dir
from .results import read_results
from .stats import (
    AGGREGATE_NAMES,
    DEFAULT_AGGREGATE,
    GROUPS,
    INTERVAL_METHOD,
    THIRDS,
    Z95,
    Case,
    Curve,
    KindStats,
    _nan_max,
    kind_curves,
    layer_thirds,
)


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
    aggregate: str = DEFAULT_AGGREGATE
    stats: dict[str, KindStats] = field(default_factory=dict)
    vmax: float | None = None  # the heatmaps' shared colour maximum (vmin is 0)
    vmax_kind: str | None = None
    guard_counts: dict[str, int] = field(default_factory=dict)  # kept facts per warning code (tracer.guards)

    @property
    def baseline(self) -> float | None:
        return self.corrupted_prob

    @property
    def severed_paths(self) -> dict[str, list[float]] | None:
        """The paper's Figure 3: AIE at the last subject token by the layer of the restored hidden
        state, ordinary and with the MLP/attention outputs at that token severed (None without)."""
        names = [k for k in self.kinds if k.startswith(severed_name(""))]
        if not names or "hidden" not in self.curves:
            return None
        return {name: self.curves[name]["last_subject"].mean for name in ["hidden", *names]}

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "config": self.config,
            "aggregate": self.aggregate,
            "aggregate_description": AGGREGATE_NAMES[self.aggregate],
            "n_layers": self.n_layers,
            "kinds": self.kinds,
            "facts": {"kept": self.kept, "skipped": self.skipped, "skipped_by_reason": self.skipped_by_reason},
            "total_effect": {"mean": self.total_effect, "std": self.total_effect_std},
            "clean_prob": self.clean_prob,
            "corrupted_prob": self.corrupted_prob,
            "baseline": self.corrupted_prob,
            "groups": list(GROUPS),
            "thirds": {name: list(span) for name, span in zip(THIRDS, self.thirds)},
            "kind_stats": {kind: vars(s).copy() for kind, s in self.stats.items()},
            "indirect_effect": {
                kind: {
                    group: {
                        "mean": c.mean,
                        "std": c.std,
                        "n": c.n,
                        "rows": c.rows,
                        "facts": c.facts,
                        "score": c.score,
                        "peak_layer": c.peak_layer,
                        "peak": c.peak,
                        "thirds": dict(zip(THIRDS, c.thirds)),
                        "low": c.low,
                        "high": c.high,
                        "count": c.count,
                    }
                    for group, c in groups.items()
                }
                for kind, groups in self.curves.items()
            },
            "interval": {"level": 0.95, "z": Z95, "method": INTERVAL_METHOD},
            "peak_layers": {
                kind: {
                    group: {"counts": c.peak_counts, "facts": int(sum(c.peak_counts)),
                            "mode": int(np.argmax(c.peak_counts)) if sum(c.peak_counts) else None}
                    for group, c in groups.items()
                }
                for kind, groups in self.curves.items()
            },
            "heatmap": {
                "vmin": 0.0,
                "vmax": self.vmax,
                "vmax_kind": self.vmax_kind,
                "rows": list(GROUPS),
                "values": {kind: [groups[g].heat for g in GROUPS] for kind, groups in self.curves.items()},
            },
            "guards": self.guard_counts,
            "severed_paths": None if self.severed_paths is None else {
                "group": "last_subject", "series": self.severed_paths},
            "warnings": self.warnings,
        }


# ---- records -> report ------------------------------------------------------------------------


def _cases(kept: list[dict], kinds: list[str], n_layers: int, warnings: list[str]) -> tuple[dict[str, list[Case]], list[dict]]:
    """Each kind's cases; the records with at least one usable grid."""
    by_kind: dict[str, list[Case]] = {k: [] for k in kinds}
    used = []
    for r in kept:
        try:
            T = len(r["tokens"])
            b, e = (int(x) for x in r["subject_range"])
            high, low = float(r["clean_prob"]), float(r["corrupted_prob"])
            grids = r["grids"]
            if not isinstance(grids, dict):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            warnings.append(f"known_id {r.get('known_id')!r}: incomplete result line, left out")
            continue
        if not 0 <= b < e <= T:
            warnings.append(f"known_id {r.get('known_id')!r}: subject range {[b, e]} does not fit its {T} tokens, left out")
            continue
        any_grid = False
        for kind in kinds:
            grid = grids.get(kind)
            if grid is None:  # a kind missing for this fact (a ROME directory may lack files): skipped silently
                continue
            try:
                scores = np.asarray(grid["prob"], dtype=np.float64)
                case = Case(r.get("known_id"), scores, float(grid.get("low_score", low)), float(grid.get("high_score", high)), (b, e))
            except (KeyError, TypeError, ValueError):
                warnings.append(f"known_id {r.get('known_id')!r}: unreadable {kind} grid, left out")
                continue
            if scores.shape != (T, n_layers):
                warnings.append(f"known_id {r.get('known_id')!r}: {kind} grid shape does not match its tokens, left out")
                continue
            by_kind[kind].append(case)
            any_grid = True
        if any_grid:
            used.append(r)
    return by_kind, used


def aggregate(records: list[dict], path: str = "", mode: str = DEFAULT_AGGREGATE) -> SweepReport:
    """The average indirect effect curves of the kept facts in `records` (see the module docstring)."""
    kept = [r for r in records if r.get("status") == "kept"]
    skipped = [r for r in records if r.get("status") == "skipped"]
    by_reason: dict[str, int] = {}
    for r in skipped:
        by_reason[r.get("skipped") or "?"] = by_reason.get(r.get("skipped") or "?", 0) + 1
    config = (records[0].get("config") if records else None) or {}
    warnings: list[str] = []
    kinds: list[str] = list(config.get("kinds") or [])
    if kinds:  # the severed-path series (sweep --sever) are averaged like kinds of their own
        kinds += [severed_name(k) for k in config.get("sever") or []]
    n_layers = 0
    for r in kept:
        try:
            grids = r["grids"]
            first = grids[next(iter(grids))]["prob"]
            n_layers = len(first[0])
            if not kinds:
                kinds = [k for k in KINDS if k in grids] + [k for k in grids if k not in KINDS]
            break
        except (KeyError, TypeError, StopIteration, IndexError):
            continue
    thirds = layer_thirds(n_layers) if n_layers else []
    by_kind, used = _cases(kept, kinds, n_layers, warnings)
    curves, stats = {}, {}
    for kind in kinds:
        curves[kind], stats[kind] = kind_curves(by_kind[kind], mode, n_layers)
    vmax_kind = next((k for k in KINDS if k in kinds and stats[k].facts), None)
    vmax = _nan_max([_nan_max(c.heat) or 0.0 for c in curves[vmax_kind].values() if c.facts]) if vmax_kind else None
    # the fact-level numbers: each kept fact once (its first kind's low/high; they agree across kinds)
    first_case = {}
    for kind in kinds:
        for c in by_kind[kind]:
            first_case.setdefault(repr(c.known_id), c)
    highs = np.array([c.high for c in first_case.values()])
    lows = np.array([c.low for c in first_case.values()])
    guard_counts: dict[str, int] = {}
    for r in used:
        codes = {w.get("code", "note") if isinstance(w, dict) else "note" for w in r.get("warnings") or []}
        for code in codes:
            guard_counts[code] = guard_counts.get(code, 0) + 1
    return SweepReport(
        guard_counts=dict(sorted(guard_counts.items())),
        path=path,
        config=config,
        n_layers=n_layers,
        kinds=kinds,
        kept=len(used),
        skipped=len(skipped),
        skipped_by_reason=by_reason,
        total_effect=float(highs.mean() - lows.mean()) if len(highs) else None,
        total_effect_std=float(np.std(highs - lows)) if len(highs) else None,
        clean_prob=float(highs.mean()) if len(highs) else None,
        corrupted_prob=float(lows.mean()) if len(lows) else None,
        curves=curves,
        thirds=thirds,
        warnings=warnings,
        aggregate=mode,
        stats=stats,
        vmax=vmax,
        vmax_kind=vmax_kind,
    )


NO_RELATION = "(none)"  # the group of records without a relation_id


def aggregate_by_relation(records: list[dict], path: str = "", mode: str = DEFAULT_AGGREGATE) -> dict[str, SweepReport]:
    """One report per relation (the records' relation_id, as ROME's analyses split known_1000 and
    counterfact), each aggregated on its own (its own baseline under ROME's aggregation).

    Args:
        records: a results file's records.
        path: the file, for the reports' headers.
        mode: the aggregation (DEFAULT_AGGREGATE or "per-fact").

    Returns:
        {relation_id: SweepReport}, relations in sorted order, NO_RELATION last.
    """
    groups: dict[str, list[dict]] = {}
    for r in records:
        relation = r.get("relation_id")
        groups.setdefault(relation if isinstance(relation, str) and relation else NO_RELATION, []).append(r)
    order = sorted(k for k in groups if k != NO_RELATION) + ([NO_RELATION] if NO_RELATION in groups else [])
    return {k: aggregate(groups[k], path, mode) for k in order}

def _records(path: str) -> tuple[list[dict], list[str]]:
    """A results file's records (or a directory of ROME's per-case .npz files'), with its warnings."""
    if os.path.isdir(path):
        records, warnings = read_npz_dir(path)
    else:
        records, warnings = read_results(path)
    if not records:
        raise InputError(f"{path} holds no sweep results")
    return records, warnings


def load_report(path: str, mode: str = DEFAULT_AGGREGATE) -> SweepReport:
    """The report of a results file, or of a directory of ROME's per-case .npz files."""
    records, warnings = _records(path)
    report = aggregate(records, path, mode)
    report.warnings = warnings + report.warnings
    return report


def load_relation_reports(path: str, mode: str = DEFAULT_AGGREGATE) -> dict[str, SweepReport]:
    """One report per relation_id of a results file (aggregate_by_relation); the file's warnings go
    to every report."""
    records, warnings = _records(path)
    reports = aggregate_by_relation(records, path, mode)
    for report in reports.values():
        report.warnings = warnings + report.warnings
    return reports


