"""A deterministic stand-in for tracer.engine.Engine, for snapshot tests: no model, no threads,
the same tokens, numbers and timings every time."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

from tracer.engine import ModelInfo
from tracer.events import CellsDone, Started
from tracer.guards import TraceWarning
from tracer.types import Prediction, TraceResult

N_LAYERS = 12


def done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def tokens_of(prompt: str) -> list[str]:
    words = prompt.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def subject_range(tokens: list[str], subject: str) -> tuple[int, int] | None:
    words = subject.split()
    stripped = [t.strip() for t in tokens]
    for b in range(len(tokens) - len(words) + 1):
        if stripped[b:b + len(words)] == words:
            return b, b + len(words)
    return None


def value(kind: str, row: int, layer: int, n_rows: int, last_subject: int) -> float:
    """A two-site picture: an early site at the subject's last token, a late site at the last token."""
    if row == last_subject:
        return 0.6 * max(0.0, 1 - abs(layer - 3) / 4) + (0.3 if kind == "mlp" else 0.0) * (layer < 6)
    if row == n_rows - 1:
        return 0.1 + 0.8 * layer / (N_LAYERS - 1)
    return 0.02


class FakeEngine:
    model_spec = "fake"

    def __init__(self, warnings: bool = True, intervals: bool = True):
        self.warnings = warnings
        self.intervals = intervals

    def load(self, model_spec=None) -> Future:
        return done(ModelInfo("fake-model", N_LAYERS, "fake-model, 12 layers", "fake BLAS", True, "cpu"))

    def tokenize(self, prompt: str, subject: str | None = None):
        tokens = tokens_of(prompt)
        return tokens, (subject_range(tokens, subject) if subject else None)

    def close(self, *args, **kwargs) -> None:
        pass

    def trace(self, request, on_event=None, cancel=None, *, settle=None) -> Future:
        emit = on_event or (lambda e: None)
        tokens = tokens_of(request.prompt)
        b, e = subject_range(tokens, request.subject) or (0, 1)
        rows = len(tokens) if request.positions == "all" else 1
        p_clean, p_corr = 0.8, 0.05
        grids = {}
        for kind in request.kinds:
            prob = [[p_corr + (p_clean - p_corr) * value(kind, r if rows > 1 else e - 1, c, len(tokens), e - 1)
                     for c in range(N_LAYERS)] for r in range(rows)]
            g = {"prob": prob, "recovery": [[100 * (p - p_corr) / (p_clean - p_corr) for p in row] for row in prob],
                 "logit_diff": [[4 * p - 1 for p in row] for row in prob]}
            if self.intervals:
                g["prob_low"] = [[p - 0.06 for p in row] for row in prob]
                g["prob_high"] = [[p + 0.06 for p in row] for row in prob]
            if request.ci_width is not None:  # adaptive samples: each cell's count (3, 6, 12 by layer)
                g["samples"] = [[3 * 2 ** (c % 3) for c in range(N_LAYERS)] for _ in range(rows)]
            grids[kind] = g
        total = rows * N_LAYERS * len(request.kinds)
        emit(Started(tokens, (b, e), p_clean, p_corr, (rows, N_LAYERS), tuple(request.kinds), " Paris", total))
        n = 0
        for kind, g in grids.items():
            for r in range(rows):
                n += N_LAYERS
                emit(CellsDone(kind, [(r, c) for c in range(N_LAYERS)], g["prob"][r], g["recovery"][r],
                               g["logit_diff"][r], n, total, prob_low=g["prob_low"][r] if self.intervals else None,
                               prob_high=g["prob_high"][r] if self.intervals else None))
        warnings = [TraceWarning("small-total-effect", "small total effect (fake)"),
                    TraceWarning("weak-target", "the target is a stop word (fake)")] if self.warnings else []
        top = [Prediction(1, " Paris", 0.8), Prediction(2, " London", 0.05), Prediction(3, " Rome", 0.03)]
        corrupted_top = [Prediction(4, " the", 0.2), Prediction(1, " Paris", 0.05), Prediction(5, " a", 0.04)]
        positions = "all" if request.positions == "all" else [e - 1]
        return done(TraceResult(
            model="fake-model", tokens=tokens, subject_range=(b, e), target_id=1, target_text=" Paris",
            clean_prob=p_clean, corrupted_prob=p_corr, clean_top=top, corrupted_top=corrupted_top,
            corrupted_top_id=4, noise_std=0.1234, corruption="noise", positions=positions, request=request,
            grids=grids, seconds=1.5, warnings=warnings, token_ids=list(range(len(tokens)))))

    def inspect(self, request, kind: str, layer: int, *, token: int | None = None, k: int = 5) -> Future:
        """A patched run's top-k: fixed predictions whose first probability is the cell's value."""
        result = request if isinstance(request, TraceResult) else self.trace(request).result()
        p = result.grids[kind]["prob"][token if token is not None else 0][layer]
        top = [Prediction(1, " Paris", p), Prediction(2, " London", 0.05), Prediction(3, " Rome", 0.03),
               Prediction(4, " the", 0.02), Prediction(5, " a", 0.01)][:k]
        return done(SimpleNamespace(top=top, restored={"target": {"text": " Paris", "prob": p}}))
