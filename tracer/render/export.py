"""A TraceResult as JSON (the documented schema), long-format CSV, or a labelled text table (tables.py)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from ..guards import warning_dict, warning_lines
from ..metrics import METRIC_NAMES
from .tokens import escape_controls


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


# noise mode only; "samples" (each cell's number of noise samples) with adaptive samples only
UNCERTAINTY_KEYS = ("prob_std", "prob_low", "prob_high", "logit_diff_std", "samples")


def grid_keys(result) -> tuple[str, ...]:
    """The keys each exported grid carries: the metrics, then (noise mode) the uncertainty keys
    the result has: prob_std, prob_low, prob_high, logit_diff_std, samples."""
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
    from ..analyses.summary import summarize

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
            "ci_width": req.ci_width,
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
        **_estimate_json(result),
    }


def _estimate_json(result) -> dict:
    """With an estimate (request.estimate): "exact" (False: the grids are the estimate),
    "estimate" (grids[kind] {"prob", "recovery"}) and, once exact, "estimate_error" (per grid:
    correlation, mean and largest absolute errors, the largest errors and where)."""
    if result.estimate is None:
        return {}
    return {"exact": result.exact, "estimate": result.estimate, "estimate_error": result.estimate_error}


def to_json_text(result, *, top: int = 3, extra: dict | None = None) -> str:
    """to_json as indented strict JSON text, with a final newline."""
    return dumps(to_json(result, top=top, extra=extra), indent=1) + "\n"


def _top_comment(predictions) -> str:
    return "; ".join(f"{json.dumps(p.text)} {p.prob:.6g}" for p in predictions)


def csv_comments(result) -> list[str]:
    """The CSV's header comment lines (each starts with "# "): the model, the target with its clean
    and corrupted probability (and each of its tokens' when it has several), whether recovery is
    available, both runs' top-k predictions (each a JSON-quoted token text and its probability), and
    every warning ("# warning [code]: message", guards.warning_lines: the ones that void the reading
    first)."""
    return [
        f"# model: {escape_controls(result.model)}",
        f"# target: {json.dumps(result.target_text)} (id {result.target_id}); clean_prob {result.clean_prob:.6g}; "
        f"corrupted_prob {result.corrupted_prob:.6g}",
        *(["# target_tokens: " + "; ".join(f"{json.dumps(t['text'])} (id {t['id']}) clean {t['clean_prob']:.6g} "
                                            f"corrupted {t['corrupted_prob']:.6g}" for t in result.target_tokens)]
          if len(result.target_tokens) > 1 else []),
        f"# recovery_available: {'true' if result.recovery_available else 'false'}",
        f"# clean_top: {_top_comment(result.clean_top)}",
        f"# corrupted_top: {_top_comment(result.corrupted_top)}",
        *(f"# {escape_controls(line)}" for line in warning_lines(result.warnings)),
    ]


def _csv_value(v) -> str:
    return "" if v is None else f"{v:.6g}"


def to_csv(result, *, extra_comments: list[str] | None = None) -> str:
    """The result as long-format CSV.

    Args:
        result: a TraceResult.
        extra_comments: more comment lines after csv_comments (each starting with "# ").

    Returns:
        Comment lines ("# ...", csv_comments), then a header and one line per (kind, row, layer)
        with the metrics and, in noise mode, the uncertainty columns (grid_keys); a cell without
        a value is empty. Read it with e.g. ``csv.DictReader(l for l in f if l[:1] != "#")``.
    """
    out = io.StringIO()
    out.write("\n".join([*csv_comments(result), *(extra_comments or [])]) + "\n")
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
