"""How far a trace's peak depends on the corruption: one fact traced under several corruptions.

The literature disputes how much Gaussian-noise localisation depends on the corruption; this
answers it for one fact. The variants, in this order (the first is the reference):
    noise s3           Gaussian noise, 3 x sigma of the known_1000 subjects' embeddings (ROME's default)
    noise s1.5, s6     the same at half and twice the strength
    uniform u<h>       uniform noise on [-h, h] with the std of s3 (h = 3 sqrt(3) sigma)
    replace s3         the subject's embeddings replaced by s3 noise instead of noised
    substitute 'X'     the subject's text replaced by another known_1000 subject of the same token
                       length (of the same relation where possible)
Every variant traces the same target (the clean run's top token, or the one given), so the
numbers compare. Per variant and kind: the peak (restored positions, layer) of P(target) at the
subject site (tracer.analyses.summary.find_site: the rows restoring a subject token, trivial cells and
cells within noise left out: the site where the fact is read, not the last token's late
restoration), its P and recovery (None where not available), the total effect and the guards' codes. Per kind a
verdict: how many variants share the modal peak exactly, and how many put it at the same token
within LAYER_TOLERANCE layers.

Nothing here imports MLX at module level (tracer/__init__.py imports this module).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

from ..errors import InputError, check_cancel
from ..events import RobustnessProgress, RobustnessWork
from ..guards import recovery_available
from ..inputs.facts_file import load_facts
from ..inputs.prompts import subject_span, tokenize
from ..settings import TraceSettings
from ..types import TraceRequest
from .summary import find_site

LAYER_TOLERANCE = 2
NOISE_LEVELS = ("s3", "s1.5", "s6")  # s3 first: the reference
WEAK_CODES = ("corruption-kept-target", "negative-total-effect", "small-total-effect")
MAX_SUBSTITUTES = 20
DEFAULT_SUBSTITUTES = 3  # substitution variants traced by default (robustness's own setting)
DEFAULTS = TraceSettings()  # every other setting's default is the trace's
WEAK_PEAK = 10.0  # % recovery: a kind whose peaks all stay below it has no clear site to move


@dataclass(frozen=True)
class Variant:
    """One corruption: its name, and the trace settings it changes."""

    name: str
    corruption: str  # "noise" or "substitution"
    noise: str = "s3"
    replace: bool = False
    corrupted_prompt: str | None = None
    substitute: str | None = None  # substitution: the subject put in the prompt
    same_relation: bool | None = None  # substitution: drawn from the fact's own relation

    def request_options(self) -> dict:
        """The keyword arguments of a TraceRequest (or tracer.trace) that make this corruption."""
        if self.corrupted_prompt is not None:
            return {"corrupted_prompt": self.corrupted_prompt}
        return {"noise": self.noise, "replace": self.replace}

    def to_dict(self) -> dict:
        return {"name": self.name, "corruption": self.corruption, **self.request_options(),
                **({"substitute": self.substitute, "same_relation": self.same_relation} if self.substitute else {})}


@dataclass(frozen=True)
class Peak:
    """The cell of largest P(target) in one grid: its restored positions (one row), layer, values."""

    positions: tuple[int, ...]
    token: str  # the positions' tokens, joined by "+"
    layer: int
    prob: float
    recovery: float | None  # None: recovery not available

    def to_dict(self) -> dict:
        return {"positions": list(self.positions), "token": self.token, "layer": self.layer,
                "prob": self.prob, "recovery": self.recovery}


@dataclass
class VariantRun:
    """One variant's trace, reduced: probabilities, total effect, warning codes, peaks and the
    P(target) curve over layers at each kind's modal peak row (filled in with the verdicts)."""

    variant: Variant
    clean_prob: float
    corrupted_prob: float
    warnings: list[str]
    peaks: dict[str, Peak | None]
    curves: dict[str, list[float | None]] = field(default_factory=dict)
    result: object = None  # the TraceResult (not exported)

    @property
    def total_effect(self) -> float:
        return self.clean_prob - self.corrupted_prob

    @property
    def weak(self) -> bool:
        """The corruption barely changes the prediction: its peaks mean little."""
        return any(code in WEAK_CODES for code in self.warnings)

    def to_dict(self) -> dict:
        return {**self.variant.to_dict(), "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob,
                "total_effect": self.total_effect, "warnings": list(self.warnings),
                "peaks": {k: p.to_dict() if p else None for k, p in self.peaks.items()}, "curves": self.curves}


@dataclass(frozen=True)
class KindVerdict:
    """Whether one kind's peak moves across the variants."""

    kind: str
    peak: Peak | None  # the modal peak (ties: the earliest variant's, s3 first)
    n_variants: int
    n_same: int  # variants whose peak is exactly the modal one
    n_near: int  # same positions, layer within the tolerance
    n_same_token: int  # same positions, any layer
    tolerance: int
    label: str  # "stable", "mostly stable", "moves", "no peak"
    max_recovery: float | None = None  # the largest recovery % among the peaks (None: none available)

    @property
    def weak(self) -> bool:
        """Every peak recovers less than WEAK_PEAK %: the kind has no clear site, wherever it lies."""
        return self.max_recovery is not None and self.max_recovery < WEAK_PEAK

    @property
    def text(self) -> str:
        if self.peak is None:
            return f"{self.kind}: no peak (no subject cell above the noise under any corruption)"
        text = (f"{self.kind}: peak at {self.peak.token!r} layer {self.peak.layer} under {self.n_same} of "
                f"{self.n_variants} corruptions; same token, layer within ±{self.tolerance} under "
                f"{self.n_near} of {self.n_variants} ({self.label})")
        if self.weak:
            text += f"; weak: at most {self.max_recovery:.0f}% recovery, so where it lies means little"
        return text

    def to_dict(self) -> dict:
        return {"kind": self.kind, "peak": self.peak.to_dict() if self.peak else None, "n_variants": self.n_variants,
                "n_same": self.n_same, "n_near": self.n_near, "n_same_token": self.n_same_token,
                "tolerance": self.tolerance, "label": self.label, "max_recovery": self.max_recovery,
                "weak": self.weak, "text": self.text}


def judge(kind: str, peaks: list[Peak | None], tolerance: int = LAYER_TOLERANCE) -> KindVerdict:
    """The verdict on one kind from its variants' peaks (in variant order, the reference first).

    Args:
        kind: the kind's name.
        peaks: each variant's peak (None where its grid has no value).
        tolerance: layers a peak may lie from the modal one and still count as near.

    Returns:
        A KindVerdict: the modal (positions, layer) and how many variants share it exactly, at
        the same positions within `tolerance` layers, and at the same positions; "stable" when
        every variant is near, "mostly stable" when at least two thirds are, else "moves"; the
        largest recovery % among the peaks (`weak` when under WEAK_PEAK).
    """
    found = [p for p in peaks if p is not None]
    n = len(peaks)
    if not found:
        return KindVerdict(kind, None, n, 0, 0, 0, tolerance, "no peak")
    counts = Counter((p.positions, p.layer) for p in found)
    best = max(counts.values())
    mode = next(p for p in found if counts[(p.positions, p.layer)] == best)
    same_token = [p for p in found if p.positions == mode.positions]
    near = [p for p in same_token if abs(p.layer - mode.layer) <= tolerance]
    label = "stable" if len(near) == n else "mostly stable" if 3 * len(near) >= 2 * n else "moves"
    recoveries = [p.recovery for p in found if p.recovery is not None]
    return KindVerdict(kind, mode, n, best, len(near), len(same_token), tolerance, label,
                       max(recoveries) if recoveries else None)


def overall_verdict(verdicts: list[KindVerdict], runs: list[VariantRun]) -> str:
    """One line: which kinds' peaks hold, which move, and which corruptions are too weak to judge."""
    stable = [v.kind for v in verdicts if v.label == "stable"]
    mostly = [v.kind for v in verdicts if v.label == "mostly stable"]
    moves = [v.kind for v in verdicts if v.label in ("moves", "no peak")]
    if stable and not mostly and not moves:
        line = f"the peak holds under all {len(runs)} corruptions for every kind (±{LAYER_TOLERANCE} layers)"
    else:
        parts = [f"{label}: {', '.join(kinds)}" for label, kinds in
                 (("holds", stable), ("mostly holds", mostly), ("moves", moves)) if kinds]
        line = "the peak " + "; ".join(parts)
    faint = [v.kind for v in verdicts if v.weak]
    if faint:
        line += f"; no clear site (every peak under {WEAK_PEAK:.0f}% recovery): {', '.join(faint)}"
    weak = [r.variant.name for r in runs if r.weak]
    if weak:
        line += f"; {len(weak)} corruption(s) barely change the prediction ({', '.join(weak)}): their peaks mean little"
    return "verdict: " + line


@dataclass(frozen=True)
class Substitute:
    subject: str
    prompt: str
    same_relation: bool


def pick_substitutes(tokenizer, prompt: str, subject: str, facts, n: int, seed: int = 1) -> list[Substitute]:
    """Up to `n` subjects to put in place of `subject`: drawn from `facts`' subjects (shuffled by
    numpy RandomState(seed)), those of a relation of a fact whose subject is `subject` first; each
    must leave the prompt's token count, and the subject's token range, as they are, and change
    the subject's tokens.

    Args:
        tokenizer: the model's `tokenizers` tokenizer.
        prompt: the clean prompt.
        subject: the subject (its first occurrence is replaced).
        facts: Fact records (tracer.inputs.facts.load_facts), with relation ids where known.
        n: how many substitutes at most.
        seed: the shuffle's seed.

    Returns:
        Substitutes (subject, substituted prompt, whether of the same relation), same relation first.
    """
    import numpy as np

    clean = tokenize(tokenizer, prompt)
    span = subject_span(prompt, subject, clean)
    text = subject if subject in prompt else subject.strip()
    key = text.strip().casefold()
    relations = {f.relation_id for f in facts if f.relation_id and f.subject.strip().casefold() == key}
    seen, same, other = {key}, [], []
    for fact in facts:
        name = fact.subject.strip()
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            (same if fact.relation_id in relations else other).append(name)
    rs = np.random.RandomState(seed)
    pool = [(True, same[i]) for i in rs.permutation(len(same))] + [(False, other[i]) for i in rs.permutation(len(other))]
    out: list[Substitute] = []
    for same_relation, name in pool:
        if len(out) >= n:
            break
        new_prompt = prompt.replace(text, name, 1)
        if len(tokenizer.encode(new_prompt).ids) != len(clean):
            continue
        tokens = tokenize(tokenizer, new_prompt, "the substituted prompt")
        b, e = span
        if subject_span(new_prompt, name, tokens) == span and tokens.ids[b:e] != clean.ids[b:e]:
            out.append(Substitute(name, new_prompt, same_relation))
    return out


def make_variants(model, prompt: str, subject: str, *, substitutes: int, seed: int, facts="known_1000") -> list[Variant]:
    """The corruptions traced, in order: s3, s1.5, s6, uniform (the std of s3), replace s3, and
    up to `substitutes` substitutions (`facts`: a facts file name or a list of Fact records)."""
    uniform = f"u{3 * math.sqrt(3.0) * model.subject_sigma():.4g}"
    variants = [Variant(f"noise {rule}", "noise", rule) for rule in NOISE_LEVELS]
    variants += [Variant(f"uniform {uniform}", "noise", uniform), Variant("replace s3", "noise", "s3", replace=True)]
    if substitutes:
        fact_list = load_facts(facts) if isinstance(facts, str) else list(facts)
        for s in pick_substitutes(model.tokenizer, prompt, subject, fact_list, substitutes, seed):
            variants.append(Variant(f"substitute {s.subject!r}", "substitution", corrupted_prompt=s.prompt,
                                    substitute=s.subject, same_relation=s.same_relation))
    return variants


def find_peak(result, kind: str) -> Peak | None:
    """The subject-site peak of P(target) in `result`'s `kind` grid (tracer.analyses.summary.find_site: the
    largest cell among the rows restoring a subject token, trivial cells and cells within noise
    left out; the first on ties); None if no cell is left."""
    site = find_site(result, kind, "prob", "subject")
    if site is None:
        return None
    row, layer = site["row"], site["layer"]
    positions = tuple(site["tokens"])
    recovery = result.grids[kind]["recovery"][row][layer]
    if not (getattr(result, "recovery_available", True) and recovery_available(result.clean_prob, result.corrupted_prob)):
        recovery = None  # the total effect is below guards.MIN_TOTAL_EFFECT: recovery % means nothing
    return Peak(positions, site["text"], int(layer), float(site["prob"]),
                None if recovery is None or not math.isfinite(recovery) else float(recovery))


@dataclass
class RobustnessResult:
    """A fact traced under several corruptions: the runs, a verdict per kind and one overall."""

    prompt: str
    subject: str
    target_text: str
    tokens: list[str]
    kinds: tuple[str, ...]
    positions: object  # "all" or the restored positions
    settings: dict  # samples, seed, window
    runs: list[VariantRun]
    verdicts: dict[str, KindVerdict]
    verdict: str
    n_layers: int
    notes: list[str] = field(default_factory=list)  # e.g. fewer substitutes than asked for
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The result as JSON values."""
        return {"prompt": self.prompt, "subject": self.subject, "target": self.target_text, "tokens": self.tokens,
                "kinds": list(self.kinds), "positions": self.positions if self.positions == "all" else list(self.positions),
                "settings": self.settings, "n_layers": self.n_layers, "tolerance": LAYER_TOLERANCE,
                "variants": [r.to_dict() for r in self.runs],
                "verdicts": {k: v.to_dict() for k, v in self.verdicts.items()}, "verdict": self.verdict,
                "notes": list(self.notes), "seconds": self.seconds}

    def to_text(self) -> str:
        """The table, the peak-layer plot of each kind and the verdicts, as plain text."""
        from ..render.robustness import render

        return render(self)


def robustness(model, prompt: str, subject: str, *, kinds=DEFAULTS.kinds, positions="all",
               target: str | None = None, samples: int = DEFAULTS.samples, seed: int = DEFAULTS.seed,
               window: int = DEFAULTS.window, substitutes: int = DEFAULT_SUBSTITUTES,
               facts="known_1000", on_event=None, cancel=None) -> RobustnessResult:
    """Trace one fact under several corruptions (see the module docstring) and judge its peaks.

    Args:
        model: a loaded Tracer.
        prompt, subject: the fact, as for tracer.trace.
        kinds, positions, samples, seed, window: as for tracer.trace, the same for every variant.
        target: the traced target; None: the clean run's top token (the same for every variant).
        substitutes: how many substitution variants at most (0..20).
        facts: where substitute subjects come from: a facts file name ("known_1000") or Fact records.
        on_event: called with RobustnessProgress events (before and after each variant) and, while
            one runs, RobustnessWork events (the work done of all).
        cancel: a threading.Event; once set, the trace in hand stops and TraceCancelled is raised.

    Returns:
        A RobustnessResult.

    Raises:
        InputError: bad input (the message says which); TraceCancelled: `cancel` was set.
    """
    started = time.perf_counter()
    emit = on_event or (lambda event: None)
    if isinstance(substitutes, bool) or not isinstance(substitutes, int) or not 0 <= substitutes <= MAX_SUBSTITUTES:
        raise InputError(f"substitutes must be a whole number from 0 to {MAX_SUBSTITUTES} (got {substitutes!r:.40})")
    common = dict(target=target, positions=positions, kinds=kinds, samples=samples, seed=seed, window=window)
    TraceRequest(prompt, subject, **common)  # bad input fails here, before any work
    check_cancel(cancel)
    variants = make_variants(model, prompt, subject, substitutes=substitutes, seed=seed, facts=facts)
    notes = []
    found = sum(v.corruption == "substitution" for v in variants)
    if found < substitutes:
        notes.append(f"{found} of {substitutes} substitutes found: too few subjects of the facts give the "
                     "prompt its token length with a changed subject")
    if found and not any(v.same_relation for v in variants):
        notes.append(f"substitutes of any relation: no fact has the subject {subject!r}, or none of its "
                     "relation fits the token length")
    runs = _run_variants(model, [(v, TraceRequest(prompt, subject, **common, **v.request_options())) for v in variants],
                         emit, cancel)
    first = runs[0].result
    kinds_done = first.request.kinds
    verdicts = {k: judge(k, [r.peaks[k] for r in runs]) for k in kinds_done}
    for k, v in verdicts.items():
        for r in runs:
            if v.peak is not None:
                row = v.peak.positions[0] if first.positions == "all" else 0
                r.curves[k] = [None if x is None else float(x) for x in r.result.grids[k]["prob"][row]]
    return RobustnessResult(prompt, subject, first.target_text, list(first.tokens), kinds_done, first.positions,
                            {"samples": samples, "seed": seed, "window": window, "substitutes": substitutes},
                            runs, verdicts, overall_verdict(list(verdicts.values()), runs), model.n_layers,
                            notes, time.perf_counter() - started)


def _run_variants(model, planned: list, emit, cancel) -> list[VariantRun]:
    """Trace each (variant, request) in turn. Progress: RobustnessProgress before and after each, and
    while one runs, the work done of all (each trace weighed by its predicted token-layers,
    core.tracing.predicted_work, and counted within by the work its events report)."""
    from ..core.tracing import predicted_work, run_trace

    works = [predicted_work(model, request) for _, request in planned]
    total, n = sum(works), len(planned)
    runs: list[VariantRun] = []
    for i, (variant, request) in enumerate(planned):
        before = sum(works[:i])

        def relay(event, i=i, before=before, share=works[i]):
            if getattr(event, "work_total", 0) and hasattr(event, "work_done"):
                emit(RobustnessWork(i, before + share * event.work_done // event.work_total, total))

        emit(RobustnessProgress(i, n, variant.name, False, before, total))
        result = run_trace(model, request, on_event=relay, cancel=cancel)
        codes = [getattr(w, "code", "note") for w in result.warnings if getattr(w, "code", "") != "slow-blas"]
        peaks = {k: find_peak(result, k) for k in request.kinds}
        runs.append(VariantRun(variant, result.clean_prob, result.corrupted_prob, codes, peaks, result=result))
        emit(RobustnessProgress(i + 1, n, variant.name, True, before + works[i], total))
    return runs
