"""One prepared run, and the restorations run on it: the two steps every patched run shares.

`prepare` turns what the user asked for into everything a patched run needs: the clean prompt's
tokens, the subject's span, the corrupted run's input (the subject's embeddings noised by the
settings' rule, or a substituted prompt aligned with the clean one), the target's tokens with
teacher forcing, the frame the patched forwards run in, and the guards that need only these.
`restored_distributions` runs one restoration on it with taps (the plain path: one forward).

The three patched runs are specialisations of these two (docs/method.md#d2-the-three-runs):
- the trace (core/tracing.run_trace) prepares once, then runs every cell through the batched
  schedule (core/schedule.py, core/packed.py), its fast path for many restorations at once;
- `inspect` (core/inspection.inspect_cell) prepares the trace's request and restores one cell;
- `patch` (tracer.api.patch) prepares a prompt pair or a noised prompt and restores chosen layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..errors import InputError
from ..guards import TraceWarning, substitution_guards
from ..inputs.prompts import Tokens, align_prompts, align_tokens, subject_span, target_ids, tokenize
from .fastops import softmax
from .patching import TapPlan


@dataclass
class PreparedRun:
    """Everything a patched run needs, made once (see `prepare`).

    The corrupted run (and every patched run) runs in the *frame*: the corrupted prompt's tokens in
    substitution mode, the clean prompt's in noise mode, followed by the target's tokens but its last
    (teacher forcing). `mapping[t]` is clean position t's place in the frame (None: no counterpart).
    """

    clean: Tokens  # the clean prompt's tokens
    subject: tuple[int, int] | None  # the subject's token range [b, e) in the clean prompt
    mode: str  # "noise" or "substitution"
    clean_ids: list[int]  # the clean run's input: the prompt, then the target's tokens but its last
    frame_ids: list[int]  # the corrupted run's input, in the frame
    embeds: mx.array | None  # noise: [samples, frame, D] input embeddings, the subject's rows noised
    noise_std: float  # the noise's absolute std (0 for substitution)
    n_samples: int  # rows of the corrupted run: the noise samples, or 1
    mapping: list[int | None]  # clean position -> frame position
    first_corrupt: int  # the first frame position that differs from the clean run
    targets: list[int] | None  # the given target's token ids (None: the clean run's top token)
    alignment: dict | None = None  # substitution: the corrupted tokens and align_prompts' result
    warnings: list[TraceWarning] = field(default_factory=list)  # the guards known before any forward

    @property
    def extra(self) -> list[int]:
        """The target's tokens read by teacher forcing (all but its last)."""
        return list(self.targets[:-1]) if self.targets else []

    @property
    def k(self) -> int:
        """The positions whose next-token distribution is read: one per target token."""
        return len(self.extra) + 1

    @property
    def n_frame(self) -> int:
        return len(self.frame_ids)

    @property
    def frame_map(self) -> list[int]:
        """Every clean-run position's place in the frame, the teacher-forced target tokens included."""
        k, n = self.k, self.n_frame
        return self.mapping + [n - k + 1 + j for j in range(k - 1)]


def prepare(tracer, prompt: str, subject: str | None, *, settings, corrupted_prompt: str | None = None,
            corrupted_subject: str | None = None, target: str | None = None) -> PreparedRun:
    """Prepare a patched run.

    Args:
        tracer: the loaded model (core/tracing.Tracer).
        prompt: the clean prompt.
        subject: the words corrupted by noise (their first occurrence); None only with a corrupted
            prompt (prompts of other lengths then align by their shared tokens alone).
        settings: a TraceSettings (noise rule, samples, seed, replace).
        corrupted_prompt: substitution: the corrupted run's prompt; None: noise.
        corrupted_subject: the corrupted prompt's words in place of the subject (alignment).
        target: the traced text (teacher-forced); None: the clean run's top token.

    Returns:
        The PreparedRun.

    Raises:
        InputError: an empty or unreadable prompt, a subject not in it, prompts that do not align,
            or more tokens than the model's context.
    """
    tok = tracer.tokenizer
    clean = tokenize(tok, prompt)
    tracer.check_context(len(clean))
    span = subject_span(prompt, subject, clean) if subject is not None else None
    targets = target_ids(tok, target, prompt, clean.ids) if target else None
    extra = list(targets[:-1]) if targets else []
    if corrupted_prompt is not None:
        prep = _substituted(tracer, clean, span, corrupted_prompt, corrupted_subject, targets)
    elif span is None:
        raise InputError("give a corrupted prompt, or the subject to corrupt with noise")
    else:
        embeds, std = tracer.noised_embeddings(clean.ids + extra, span, settings)
        prep = PreparedRun(clean, span, "noise", list(clean.ids) + extra, list(clean.ids) + extra, embeds, std,
                           settings.samples, list(range(len(clean))), span[0], targets)
    n = max(len(prep.clean_ids), prep.n_frame)
    if tracer.context_length and n > tracer.context_length:
        raise InputError(f"the prompts with the target are {n} tokens, longer than the model's context of "
                         f"{tracer.context_length}")
    return prep


def prepare_request(tracer, request) -> PreparedRun:
    """`prepare` for a TraceRequest (the trace's and inspect's)."""
    return prepare(tracer, request.prompt, request.subject, settings=request,
                   corrupted_prompt=request.corrupted_prompt, corrupted_subject=request.corrupted_subject,
                   target=request.target)


def _substituted(tracer, clean: Tokens, span, corrupted_prompt: str, corrupted_subject, targets) -> PreparedRun:
    """The PreparedRun of a substitution: the corrupted prompt aligned with the clean one."""
    corrupted = tokenize(tracer.tokenizer, corrupted_prompt, "the corrupted prompt")
    extra = list(targets[:-1]) if targets else []
    if span is None:  # no subject: equal lengths align position by position, others by shared tokens
        aligned = align_tokens(clean.ids, corrupted.ids)
        if len(clean) == len(corrupted):
            aligned["clean_to_corrupted"] = list(range(len(clean)))
        warnings = []
    else:
        other = (subject_span(corrupted_prompt, corrupted_subject, corrupted, "corrupted subject")
                 if corrupted_subject is not None else None)
        aligned = align_prompts(clean, corrupted, span, other)
        warnings = substitution_guards(clean.ids, corrupted.ids, span, aligned["clean_to_corrupted"])
    return PreparedRun(clean, span, "substitution", list(clean.ids) + extra, list(corrupted.ids) + extra, None,
                       0.0, 1, aligned["clean_to_corrupted"], aligned["prefix"], targets,
                       {"corrupted_tokens": corrupted.texts, **aligned}, warnings)


@dataclass(frozen=True)
class Restoration:
    """One patched run's restoration: `kind`'s clean outputs at `layers`, at the clean prompt's
    `positions` (each at its place in the frame; those without a counterpart are skipped); with
    `severed`, that kind's outputs above the restored layers are held at their corrupted values."""

    kind: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    severed: str | None = None


def restored_distributions(tracer, prep: PreparedRun, restoration: Restoration) -> tuple[np.ndarray, list[int]]:
    """Run one restoration on a prepared run (one forward of every corrupted row).

    Args:
        tracer: the loaded model.
        prep: from `prepare`.
        restoration: what is restored.

    Returns:
        (the patched run's next-token distributions [rows, k, vocab] in float64, one per corrupted
        row and per target token; the target's token ids: the given ones, else the clean run's top).
    """
    pm, kind = tracer.patchable, restoration.kind
    last = {"last": prep.k} if prep.k > 1 else {}
    states, clean_logits, _ = pm.record(mx.array([prep.clean_ids]), kinds=(kind,), **last)
    targets = prep.targets or [int(np.argmax(np.array(clean_logits.astype(mx.float32)).reshape(-1)))]
    batch = mx.array([prep.frame_ids] * prep.n_samples)
    where = [prep.mapping[p] for p in restoration.positions if prep.mapping[p] is not None]
    mask = np.zeros((prep.n_samples, prep.n_frame, 1), dtype=bool)
    mask[:, where] = True
    mask = mx.array(mask)
    plans = {(kind, i): TapPlan(mask=mask, clean=in_frame(states[kind][i][0], prep.mapping, prep.n_frame))
             for i in restoration.layers}
    if restoration.severed:  # the severed kind's outputs above the restored layers: the corrupted run's
        corrupted, _, _ = pm.record(batch, embeds=prep.embeds, kinds=(restoration.severed,), **last)
        for i in range(max(restoration.layers) + 1, tracer.n_layers):
            plans[(restoration.severed, i)] = TapPlan(freeze=mask, frozen=corrupted[restoration.severed][i])
    logits = pm.forward(batch, embeds=prep.embeds, plans=plans, **last).astype(mx.float32)
    dists = np.array(softmax(logits), dtype=np.float64).reshape(prep.n_samples, prep.k, -1)
    return dists, targets


def in_frame(states: mx.array, mapping: list, n_frame: int) -> mx.array:
    """A clean run's states moved to the frame's positions (where the patched forwards run).

    Args:
        states: [T, D], one kind's clean outputs at one layer.
        mapping: the frame position of each clean position (None: no counterpart).
        n_frame: the frame's length.

    Returns:
        [n_frame, D]: clean position t's state at mapping[t]; frame positions without a clean
        counterpart (never restored) hold position 0's. The identity mapping returns `states` itself.
    """
    if len(mapping) == n_frame and all(q == t for t, q in enumerate(mapping)):
        return states
    source = np.zeros(n_frame, dtype=np.int32)
    for t, q in enumerate(mapping):
        if q is not None:
            source[q] = t
    return states[mx.array(source)]
