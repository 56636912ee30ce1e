"""What a trace asks for (TraceRequest) and what it returns (TraceResult, Prediction).

Plain dataclasses holding Python values (lists, floats): safe to hand from the
engine thread to any other thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .settings import TraceSettings

ESTIMATE_MODES = ("off", "progressive", "only")  # TraceRequest.estimate
AUTO_SAMPLES = 40  # `--samples auto`: the most noise samples a cell may get
AUTO_CI_WIDTH = 0.02  # `--samples auto`: the 95% interval width in P each cell is run to


def valid_ci_width(width) -> bool:
    """Whether `width` can be an adaptive-samples target: a number (not a bool) between 0 and 1,
    both excluded. The one rule for the request, the app's field and its saved setting."""
    return not isinstance(width, bool) and isinstance(width, (int, float)) and 0 < width < 1


@dataclass(frozen=True)
class TraceRequest(TraceSettings):
    """One trace: what to trace, with the settings (TraceSettings' fields, keyword-only).

    Args:
        prompt: the clean prompt.
        subject: the words whose embeddings are corrupted (first occurrence in the prompt).
        corrupted_prompt: set: substitution mode (the corrupted run is this prompt); None: noise.
        target: the text whose probability is traced (P of all its tokens, teacher-forced: the
            product of each token's probability after the prompt and the target's earlier
            tokens); None: the clean run's top token.
        positions: "all" (the paper's token x layer grid), or what is restored together (one row
            per kind): "whole", "subject", "subject-last", "last", "3", "0-4", "0,2,5-7", "-3--1"
            or token indices (tracer.inputs.positions; stored parsed: "0-4" -> (0, 1, 2, 3, 4)).
        corrupted_subject: substitution only: the words of the corrupted prompt that replace the
            subject (its differing span), when the prompts differ elsewhere too. None: found by
            aligning the two prompts' tokens.
        top_k: how many top predictions of the clean and corrupted runs the result carries.
        estimate: "off"; "progressive" (first a first-order estimate of every cell, core/estimate.py,
            then the exact cells in the order of the estimated effect; the same exact grids) or
            "only" (the estimate alone: the grids hold it, no patched runs).
        ci_width: noise mode only: run samples progressively (core/tracing.py, adaptive samples):
            every cell first gets a few samples, then more (doubling) while its 95% interval of P is
            wider than `ci_width`, up to `samples`; each cell's count is in the grids' "samples".
            None: every cell gets `samples`.
    """

    prompt: str
    subject: str
    corrupted_prompt: str | None = None
    target: str | None = None
    positions: str | tuple[int, ...] = "all"
    corrupted_subject: str | None = None
    top_k: int = 5
    estimate: str = "off"
    ci_width: float | None = None

    def options(self) -> dict:
        """The keyword options of `tracer.trace` that make this request: every field but the prompt and
        the subject (the engine runs a request through the front door with them)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("prompt", "subject")}

    def __post_init__(self):
        super().__post_init__()
        from .errors import InputError
        from .inputs.prompts import check_text

        for value, what in ((self.prompt, "the prompt"), (self.subject, "the subject"),
                            (self.corrupted_prompt, "the corrupted prompt"), (self.target, "the target")):
            if value is None and what in ("the corrupted prompt", "the target"):
                continue  # optional: noise corruption, the clean top token
            if not isinstance(value, str):
                raise InputError(f"{what} must be text, not {type(value).__name__}")
            if not value.strip():
                raise InputError(f"{what} is empty")
            check_text(value, what)
        from .inputs.positions import parse_positions

        object.__setattr__(self, "positions", parse_positions(self.positions))  # "0-4" -> (0, 1, 2, 3, 4)
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or not 1 <= self.top_k <= 100:
            raise InputError(f"top_k must be a whole number from 1 to 100 (got {self.top_k!r:.40})")
        if self.estimate not in ESTIMATE_MODES:
            raise InputError(f"estimate must be one of {', '.join(ESTIMATE_MODES)} (got {self.estimate!r:.40})")
        if self.ci_width is not None:
            if not valid_ci_width(self.ci_width):
                raise InputError(f"ci_width must be a number between 0 and 1 (got {self.ci_width!r:.40})")
            if self.corrupted_prompt is not None:
                raise InputError("adaptive samples (ci_width) apply to noise corruption only, not to a corrupted prompt")
        if self.corrupted_subject is not None:
            if self.corrupted_prompt is None:
                raise InputError("a corrupted subject needs a corrupted prompt")
            if not isinstance(self.corrupted_subject, str):
                raise InputError(f"the corrupted subject must be text, not {type(self.corrupted_subject).__name__}")
            if not self.corrupted_subject.strip():
                raise InputError("the corrupted subject is empty")
            check_text(self.corrupted_subject, "the corrupted subject")


@dataclass
class Prediction:
    """One next token of a run: its id, its text (leading space kept) and its probability."""

    token_id: int
    text: str
    prob: float


@dataclass
class TraceResult:
    """A finished trace: the prompt's tokens, the subject's range [b, e), the target, the clean
    and corrupted probabilities (ROME's high_score/low_score), the top predictions of both runs,
    the noise's absolute std, and the grids: ``grids[kind][metric]`` as rows x layers lists
    (``grid(kind, metric)`` gives numpy), one row per token for positions "all".

    A cell is None (NaN in ``grid()``) where it has no value: every "recovery" cell when
    ``recovery_available`` is False (the total effect is below guards.MIN_TOTAL_EFFECT), and
    every metric of a clean token that has no counterpart in an aligned corrupted prompt of
    another length (``alignment``). In noise mode each grid also holds "prob_std" (the std of
    P(target) over the noise samples, ddof=1), "prob_low"/"prob_high" (the 95% Student-t
    interval of the mean) and "logit_diff_std"; substitution runs have one sample and no such keys.
    """

    model: str
    tokens: list[str]
    subject_range: tuple[int, int]  # [begin, end)
    target_id: int
    target_text: str
    clean_prob: float
    corrupted_prob: float
    clean_top: list[Prediction]
    corrupted_top: list[Prediction]
    corrupted_top_id: int  # the token the logit difference is measured against
    noise_std: float
    corruption: str  # "noise" or "substitution"
    positions: str | list[int]  # "all" or the restored positions
    request: TraceRequest
    # grids[kind][metric] -> rows x layers; metric in "prob", "recovery", "logit_diff".
    # positions == "all": one row per token; otherwise one row.
    grids: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # the prompt's token ids (ROME's input_ids)
    recovery_available: bool = True  # False: total effect below the threshold; recovery cells are None
    # substitution: {"corrupted_tokens": [...], "clean_to_corrupted": [index or None per clean token],
    # "prefix": shared leading tokens, "suffix": shared trailing tokens}; None in noise mode
    alignment: dict | None = None
    # every token of the target, teacher-forced: [{"id", "text", "clean_prob", "corrupted_prob"}];
    # P(target) is their product (one entry for a one-token target)
    target_tokens: list[dict] = field(default_factory=list)
    # request.estimate "progressive" or "only": the first-order estimate's grids[kind]["prob"/"recovery"];
    # "only": `grids` hold the estimate too (their other metrics None), `exact` is False
    estimate: dict | None = None
    # "progressive": core.estimate.estimate_error's summary per grid (correlation, largest errors)
    estimate_error: dict | None = None
    exact: bool = True

    @property
    def n_layers(self) -> int:
        first = next(iter(self.grids.values()))
        return len(first["prob"][0])

    def grid(self, kind: str, metric: str = "prob"):
        """One grid as a numpy array [rows, layers].

        Args:
            kind: "hidden", "mlp", "attn" (those traced) or "hidden-severed-mlp"/"-attn".
            metric: "prob" (P(target)), "recovery" (%) or "logit_diff".

        Returns:
            float64 array; rows are tokens (positions "all") or one row (chosen positions).

        Raises:
            InputError: the kind was not traced or the metric is unknown.
        """
        from .errors import InputError

        if kind not in self.grids:
            raise InputError(f"no {kind!r} grid in this result (it has {', '.join(self.grids)})")
        if metric not in self.grids[kind]:
            raise InputError(f"unknown metric {metric!r}: choose from {', '.join(self.grids[kind])}")
        return np.array([[np.nan if v is None else v for v in row] for row in self.grids[kind][metric]],
                        dtype=np.float64).reshape(len(self.grids[kind][metric]), -1)

    def to_dict(self) -> dict:
        """The result as the CLI's JSON document (plain Python values)."""
        from .render.export import to_json

        return to_json(self)


@dataclass
class PatchedRun:
    """One patched run's next-token distribution (mean over noise samples)."""

    probs: np.ndarray  # [vocab]
    top: list[tuple[str, float]]  # the top-k (text, probability)
    restored: dict  # kind, layers, positions (token indices)
