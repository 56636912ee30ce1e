"""ROME's per-case .npz files (docs/method.md#d24-cells-scores-and-the-grid): write a sweep's results or
one trace, read them back.

One file per fact and kind, `knowledge_{known_id}{suffix}.npz` with suffix "" (hidden),
"_mlp" or "_attn", holding numpy arrays only (np.savez, no pickle; strings are numpy
unicode arrays, so np.load(..., allow_pickle=False) reads every file):
    scores              float64 [T, L]  P(target) with each (token, layer) cell restored
    low_score           float64 []      P(target) in the corrupted run
    high_score          float64 []      P(target) in the clean run
    input_ids           int64 [T]       the prompt's token ids (-1 when the results line predates them)
    input_tokens        str [T]         each token decoded alone
    subject_range       int64 [2]       [b, e), half-open
    answer              str []          the traced target, decoded with its leading space
    window              int64 []        the mlp/attn window (stored for every kind, as ROME does)
    correct_prediction  bool []         True; a skipped fact's file holds only this field, False
    kind                str []          "", "mlp" or "attn"
Scores are stored in float64 so a directory reproduces its results file's report exactly
(ROME stores float32; both read the same way).
"""

from __future__ import annotations

import io
import os
import re
import zipfile

import numpy as np

from ..errors import InputError
from ..settings import KINDS
from ..userfiles import read_user_file
from .results import read_results

SUFFIX = {"hidden": "", "mlp": "_mlp", "attn": "_attn"}
KIND_FIELD = {"hidden": "", "mlp": "mlp", "attn": "attn"}
FILE_RE = re.compile(r"^knowledge_(.+?)(_mlp|_attn)?\.npz$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def npz_name(known_id, kind: str) -> str:
    key = str(known_id)
    if not _ID_RE.match(key):
        raise InputError(f"known_id {known_id!r} cannot name a file (letters, digits, '.', '_', '-' only)")
    if kind not in SUFFIX:
        raise InputError(f"unknown kind {kind!r}: choose from {', '.join(KINDS)}")
    return f"knowledge_{key}{SUFFIX[kind]}.npz"


def _save(path: str, arrays: dict) -> None:
    for name, a in arrays.items():  # never an object array: those would need pickle to read back
        if a.dtype == object:
            raise TypeError(f"{name} would be pickled")
    tmp = path + ".tmp.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def case_arrays(*, scores, low, high, input_ids, tokens, subject_range, answer, window, kind) -> dict:
    """The arrays of one kept case (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    T = len(tokens)
    ids = np.full(T, -1, dtype=np.int64) if input_ids is None else np.asarray(input_ids, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != T or ids.shape != (T,):
        raise InputError(f"a case needs a tokens x layers grid and one id per token (grid {scores.shape}, {T} tokens)")
    return {
        "scores": scores,
        "low_score": np.array(float(low), dtype=np.float64),
        "high_score": np.array(float(high), dtype=np.float64),
        "input_ids": ids,
        "input_tokens": np.array([str(t) for t in tokens], dtype=np.str_).reshape(T),
        "subject_range": np.array([int(subject_range[0]), int(subject_range[1])], dtype=np.int64),
        "answer": np.array(str(answer), dtype=np.str_),
        "window": np.array(int(window), dtype=np.int64),
        "correct_prediction": np.array(True),
        "kind": np.array(KIND_FIELD[kind], dtype=np.str_),
    }


def _prepare_dir(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InputError(f"{directory} is a file, not a directory")
    parent = os.path.dirname(os.path.abspath(directory))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {directory}: directory {parent} does not exist")
    os.makedirs(directory, exist_ok=True)


def trace_to_npz(result, directory: str, known_id=0, input_ids=None, correct_prediction: bool = True) -> list[str]:
    """One TraceResult (positions="all") -> one file per kind; returns the paths written."""
    if result.positions != "all":
        raise InputError("an .npz case needs the full grid: trace with positions 'all'")
    _prepare_dir(directory)
    paths = []
    if input_ids is None:
        input_ids = result.token_ids or None
    for kind, grid in result.grids.items():
        if kind not in KINDS:  # severed-path series: ROME writes no per-case file for them
            continue
        path = os.path.join(directory, npz_name(known_id, kind))
        if correct_prediction:
            arrays = case_arrays(
                scores=grid["prob"], low=result.corrupted_prob, high=result.clean_prob, input_ids=input_ids,
                tokens=result.tokens, subject_range=result.subject_range, answer=result.target_text,
                window=result.request.window, kind=kind,
            )
        else:
            arrays = {"correct_prediction": np.array(False)}
        _save(path, arrays)
        paths.append(path)
    return paths


def export_results(results_path: str, directory: str) -> tuple[int, int, int, list[str]]:
    """A sweep's results file -> a directory of per-case files. Returns (files, kept facts,
    skipped facts, warnings). The directory must not hold knowledge_*.npz files already."""
    records, warnings = read_results(results_path)
    if not records:
        raise InputError(f"{results_path} holds no sweep results")
    if os.path.isdir(directory):
        old = [n for n in os.listdir(directory) if FILE_RE.match(n)]
        if old:
            raise InputError(f"{directory} already holds {len(old)} knowledge_*.npz files; choose an empty or new directory")
    _prepare_dir(directory)
    files = kept = skipped = no_ids = 0
    for r in records:
        config = r.get("config") or {}
        kinds = list(config.get("kinds") or [])
        try:
            if r["status"] == "skipped":
                for kind in kinds:
                    _save(os.path.join(directory, npz_name(r["known_id"], kind)), {"correct_prediction": np.array(False)})
                    files += 1
                skipped += 1
                continue
            if r.get("input_ids") is None:
                no_ids += 1
            for kind, grid in r["grids"].items():
                arrays = case_arrays(
                    scores=grid["prob"], low=r["corrupted_prob"], high=r["clean_prob"], input_ids=r.get("input_ids"),
                    tokens=r["tokens"], subject_range=r["subject_range"], answer=r.get("target") or "",
                    window=config.get("window", 10), kind=kind,
                )
                _save(os.path.join(directory, npz_name(r["known_id"], kind)), arrays)
                files += 1
            kept += 1
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{results_path}: known_id {r.get('known_id')!r} is an incomplete result line") from None
    if no_ids:
        warnings.append(f"{no_ids} kept line(s) predate stored token ids: their input_ids are -1")
    return files, kept, skipped, warnings


# ---- reading ----------------------------------------------------------------------------------


def _load(path: str) -> dict:
    data = read_user_file(path, ".npz file")
    if data[:4] != b"PK\x03\x04":  # an .npz is a zip archive
        raise InputError(f"{path} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{path} holds pickled objects; tracer-tui reads numpy arrays only") from None
        raise InputError(f"{path} is not a readable .npz file: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npz file: {exc}") from None


def _known_id(text: str):
    return int(text) if text.isdigit() else text


def read_npz_dir(directory: str) -> tuple[list[dict], list[str]]:
    """A directory of per-case files -> records shaped like the results file's lines (each
    kind's grid with its own low/high score), ordered by known_id. Files of other names are
    ignored; a fact missing some kind's file simply lacks that grid (as in ROME's notebook)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise InputError(f"cannot read {directory}: {exc.strerror or exc}") from None
    by_id: dict = {}
    for name in names:
        m = FILE_RE.match(name)
        if m:
            kind = {None: "hidden", "_mlp": "mlp", "_attn": "attn"}[m.group(2)]
            by_id.setdefault(_known_id(m.group(1)), {})[kind] = os.path.join(directory, name)
    if not by_id:
        raise InputError(f"{directory} holds no knowledge_*.npz files")
    kinds = [k for k in KINDS if any(k in files for files in by_id.values())]
    config = {"model": None, "kinds": kinds, "source": "npz"}
    records, warnings, window = [], [], None
    for known_id in sorted(by_id, key=lambda k: (isinstance(k, str), k)):
        record: dict = {"status": "skipped", "known_id": known_id, "config": config, "grids": {}}
        for kind in kinds:
            path = by_id[known_id].get(kind)
            if path is None:
                continue
            z = _load(path)
            if "correct_prediction" not in z:
                raise InputError(f"{path} has no correct_prediction field: not a causal-trace case file")
            if not bool(z["correct_prediction"]):
                continue
            try:
                scores = np.asarray(z["scores"], dtype=np.float64)
                tokens = [str(t) for t in z["input_tokens"].tolist()]
                b, e = (int(x) for x in z["subject_range"].tolist())
                low, high = float(z["low_score"]), float(z["high_score"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{path} lacks scores, input_tokens, subject_range, low_score or high_score") from None
            if record["status"] == "skipped":
                record.update(status="kept", tokens=tokens, subject_range=[b, e], clean_prob=high, corrupted_prob=low,
                              target=str(z["answer"]) if "answer" in z else None,
                              input_ids=z["input_ids"].tolist() if "input_ids" in z else None)
            elif tokens != record["tokens"] or [b, e] != record["subject_range"]:
                warnings.append(f"known_id {known_id!r}: the {kind} file's tokens differ from the other kinds', left out")
                continue
            record["grids"][kind] = {"prob": scores, "low_score": low, "high_score": high}
            if "window" in z and kind != "hidden":
                window = int(z["window"])
        if record["status"] == "skipped":
            record["skipped"] = "not correct_prediction"
            del record["grids"]
        records.append(record)
    if window is not None:
        config["window"] = window
    return records, warnings
