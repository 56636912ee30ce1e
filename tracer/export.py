"""A TraceResult as JSON (the documented schema), long-format CSV, or a labelled text table."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from .guards import warning_dict
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


def to_json(result) -> dict:
    """The documented JSON document; non-finite values are null (see finite_or_null)."""
    return finite_or_null(_to_json(result))


def _to_json(result) -> dict:
    req = result.request
    return {
        "model": result.model,
        "tokens": list(result.tokens),
        "subject_range": list(result.subject_range),
        "target": {"id": result.target_id, "text": result.target_text},
        "clean_prob": result.clean_prob,
        "corrupted_prob": result.corrupted_prob,
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
        },
        "grids": {kind: {m: grid[m] for m in METRIC_NAMES} for kind, grid in result.grids.items()},
        "warnings": [warning_dict(w) for w in result.warnings],
        "timing": {"seconds": result.seconds},
    }


def to_json_text(result) -> str:
    return dumps(to_json(result), indent=1) + "\n"


def row_labels(result) -> list[tuple[int, str]]:
    """(token index, label) of each grid row."""
    if result.positions == "all":
        return [(i, t) for i, t in enumerate(result.tokens)]
    return [(p, result.tokens[p]) for p in result.positions]


def to_csv(result) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kind", "token_index", "token", "layer", *METRIC_NAMES])
    for kind, grid in result.grids.items():
        if result.positions == "all":
            rows = [(i, result.tokens[i]) for i in range(len(result.tokens))]
        else:  # one row restoring all chosen positions together
            rows = [("+".join(str(p) for p in result.positions), "+".join(result.tokens[p] for p in result.positions))]
        for r, (index, token) in enumerate(rows):
            for layer in range(len(grid["prob"][r])):
                writer.writerow([kind, index, token, layer, *("" if grid[m][r][layer] is None else f"{grid[m][r][layer]:.6g}" for m in METRIC_NAMES)])
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


def header(result) -> str:
    lines = [
        f"model: {escape_controls(result.model)}",
        f"prompt: {result.request.prompt!r}  subject: {result.request.subject!r} "
        f"(tokens {result.subject_range[0]}..{result.subject_range[1] - 1})",
        f"target: {escape_controls(repr(result.target_text))} (id {result.target_id})",
        f"clean P(target) = {result.clean_prob:.4f}   corrupted P(target) = {result.corrupted_prob:.4f}",
    ]
    if result.corruption == "noise":
        req = result.request
        how = "replacing the subject embeddings" if req.replace else "added to the subject embeddings"
        lines.append(f"corruption: noise {req.noise_rule.describe(result.noise_std)}, {how}, "
                     f"{req.samples} samples, seed {req.seed}")
    else:
        lines.append(f"corruption: substitution with {result.request.corrupted_prompt!r}")
    return "\n".join(lines)


def grid_table(result, kind: str, metric: str = "recovery") -> str:
    """Tokens down, layers across; subject rows marked with '*'."""
    grid = result.grids[kind][metric]
    fmt = METRICS[metric].cell
    labels = row_labels(result)
    if result.positions != "all":
        labels = [(-1, " + ".join(show_token(t) for _, t in labels))]
    b, e = result.subject_range
    names = [("*" if b <= i < e else " ") + show_token(t) if i >= 0 else t for i, t in labels]
    width = max(12, max(len(n) for n in names) + 1)
    n_layers = len(grid[0])
    lines = [f"{kind} - {METRICS[metric].title} (rows: {'tokens' if result.positions == 'all' else 'restored positions'}; columns: layers)"]
    lines.append(" " * width + "".join(f"{layer:>7d}" for layer in range(n_layers)))
    for name, row in zip(names, grid):
        lines.append(name.ljust(width) + "".join(" " + ("n/a".rjust(len(fmt.format(0.0))) if v is None else fmt.format(v))
                                                 for v in row))
    return "\n".join(lines)


def to_text(result, metric: str = "recovery") -> str:
    parts = [header(result), ""]
    for kind in result.grids:
        parts += [grid_table(result, kind, metric), ""]
    parts.append(f"'*' marks subject tokens. {result.seconds:.1f} s.")
    return "\n".join(parts) + "\n"


def to_npz(result, directory: str, known_id=0, input_ids=None) -> list[str]:
    """The trace as ROME's per-case files, knowledge_{known_id}{'',_mlp,_attn}.npz (tracer.sweeps.npz)."""
    from .sweeps.npz import trace_to_npz

    return trace_to_npz(result, directory, known_id=known_id, input_ids=input_ids)
