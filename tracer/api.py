"""The Python front door: load a model, predict, patch one run, trace a fact.

    import tracer
    model = tracer.load()                                   # the embedded SmolLM2-135M
    tracer.predict(model, "The Eiffel Tower is located in the city of", k=5)
    result = tracer.trace(model, "The Eiffel Tower is located in the city of", "Eiffel Tower",
                          kinds=("mlp",), positions="subject-last")
    result.grid("mlp")                                      # numpy [rows, layers] of P(target)

Everything runs on the calling thread (plus the engine's own worker threads during a
trace); MLX streams are thread-local, so use a model from the thread that loaded it.
Tracing installs taps (thin pass-through wrappers) into the model it is given.
"""

from __future__ import annotations

import inspect as inspect_module
import operator
import os
import threading
from dataclasses import fields as dataclass_fields

from .core.budget import check_model_fits
from .core.prepare import Restoration, prepare, restored_distributions
from .core.tracing import Tracer, run_trace, top_predictions
from .errors import InputError
from .inputs.positions import positions_together, resolve_positions
from .models.load import load_model
from .settings import SETTING_NAMES, TraceSettings, kind_name
from .types import PatchedRun, TraceRequest, TraceResult


def load(model: str | None = None, *, keep_quantized: bool = False, workers: int | None = None) -> Tracer:
    """Load a model ready for tracing.

    Args:
        model: None for the embedded SmolLM2-135M-Instruct (offline), a ``.gguf`` file
            (llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, gpt2), an mlx-lm model directory, or a Hugging Face repo id.
        keep_quantized: keep quantized weights packed (on CPU they are dequantized to
            float32 by default: faster, and exact).
        workers: engine worker threads for traces (default: 2 on a multi-core CPU).

    Returns:
        A ``Tracer``: the model, its tokenizer and the engine's state (cached sigmas).

    Raises:
        ModelError: the model cannot be found, read or understood, or its weights and a default
            trace (10 samples, 32 tokens) will not fit the memory available (core/budget.py's plan,
            made before loading).
    """
    check_model_fits(model, keep_quantized=keep_quantized)
    return Tracer(load_model(model, keep_quantized=keep_quantized), workers=workers)


def predict(model: Tracer, prompt: str, *, k: int = 5) -> list[tuple[str, float]]:
    """The model's top-k next tokens after `prompt`.

    Args:
        model: from ``load``.
        prompt: the text to continue.
        k: how many tokens.

    Returns:
        ``[(token text, probability), ...]``, most probable first.

    Raises:
        InputError: the prompt is empty or k < 1.
    """
    _check_model(model)
    _check_count(k, "k")
    return [(p.text, p.prob) for p in model.predict([prompt], k)[0]]


def trace(model: Tracer, prompt: str, subject: str, *, corrupted_prompt: str | None = None,
          target: str | None = None, positions="all", on_event=None,
          cancel: threading.Event | None = None, settle: threading.Event | None = None,
          **settings) -> TraceResult:
    """Causal trace of one fact, as in ROME.

    Args:
        model: from ``load``.
        prompt: the clean prompt.
        subject: the words whose embeddings are corrupted (their first occurrence).
        corrupted_prompt: trace against this prompt instead of noise (same token count).
        target: the traced token; default: the clean run's top token (as ROME).
        positions: "all" (the paper's token x layer grid), "subject-last", or token
            indices restored together.
        on_event: called with each event (Started, CellsDone, ...) as the trace runs,
            from the engine's threads.
        cancel: a threading.Event; once set, the trace stops and raises TraceCancelled.
        settle: a threading.Event, for adaptive samples (ci_width): once set, cells stop getting
            more samples and the trace finishes with what each has (core/tracing.py's run_trace).
        **settings: TraceSettings' fields, with the CLI's names and defaults: kinds
            (("hidden", "mlp", "attn")), samples (10), noise ("s3"), replace (False),
            window (10), seed (1), sever (()); and estimate ("off"; "progressive": a first-order
            estimate of every cell first, then the exact cells largest estimated effect first, the
            same grids, with ``estimate`` and ``estimate_error``; "only": see ``estimate``); and
            ci_width (None; a width: adaptive samples, each cell run to a 95% interval of P that
            narrow, up to ``samples``, its count in ``grid(kind, "samples")``).

    Returns:
        A TraceResult: ``grid(kind, metric)`` as numpy arrays, ``clean_prob``,
        ``corrupted_prob``, ``clean_top``, ``corrupted_top``, ``warnings``, ``to_dict()``.

    Raises:
        InputError: a bad prompt, subject, position or setting (the message says which).
        TraceCancelled: `cancel` was set.
    """
    _check_model(model)
    _check_keywords(settings, TRACE_OPTIONS, "trace")
    request = TraceRequest(prompt, subject, corrupted_prompt=corrupted_prompt, target=target,
                           positions=positions, **settings)
    return run_trace(model, request, on_event=on_event, cancel=cancel, settle=settle)


def estimate(model: Tracer, prompt: str, subject: str, *, corrupted_prompt: str | None = None,
             target: str | None = None, positions="all", on_event=None,
             cancel: threading.Event | None = None, **settings) -> TraceResult:
    """A first-order estimate of a causal trace (attribution patching): every cell's P(target) from
    one forward and backward pass of the corrupted run per batch of noise samples, no patched runs
    (tracer/core/estimate.py says what it is and where it is poor).

    Args:
        model: from ``load``.
        prompt, subject, corrupted_prompt, target, positions, on_event, cancel: as in ``trace``
            (on_event also gets one Estimate event per grid).
        **settings: as in ``trace``.

    Returns:
        A TraceResult whose grids hold the estimate: "prob" and "recovery" (the other metrics None,
        except for cells restoring only positions before the corruption, which are exact);
        ``exact`` is False and ``estimate`` holds the same grids.

    Raises:
        InputError: as ``trace``, and a severed kind (``sever``: not estimated).
        TraceCancelled: `cancel` was set.
    """
    if settings.get("sever"):
        raise InputError("severed paths (sever) have no first-order estimate: trace them exactly")
    return trace(model, prompt, subject, corrupted_prompt=corrupted_prompt, target=target, positions=positions,
                 on_event=on_event, cancel=cancel, estimate="only", **settings)


def _check_model(model) -> None:
    if not isinstance(model, Tracer):
        raise InputError(f"model must be what tracer.load() returns, not {type(model).__name__}")


# trace's keyword options beyond its named ones: TraceRequest's fields
TRACE_OPTIONS = tuple(f.name for f in dataclass_fields(TraceRequest) if f.name not in ("prompt", "subject"))


def _check_keywords(given: dict, allowed, what: str) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InputError(f"{what} has no option {unknown[0]!r}: choose from {', '.join(allowed)}")


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number of at least 1 (got {value!r:.40})")


def _check_path(value, name: str) -> None:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise InputError(f"{name} must be a file path, not {value!r:.40}")


def _layer_list(layers, n_layers: int) -> list[int]:
    """The sorted distinct layers of `layers` (an int or ints), each in 0..n_layers-1."""
    try:
        items = [operator.index(x) for x in ([layers] if not hasattr(layers, "__iter__") else layers)
                 if not isinstance(x, bool)]
    except TypeError:
        items = []
    if not items or not all(0 <= x < n_layers for x in items):
        raise InputError(f"layers must be whole numbers in 0..{n_layers - 1} (got {layers!r:.60})")
    return sorted(set(items))


def patch(model: Tracer, clean_prompt: str, corrupted_prompt: str | None = None, *, kind: str = "mlp",
          layers=(8,), positions="whole", subject: str | None = None, k: int = 5, **settings) -> PatchedRun:
    """Run the corrupted input with some clean states restored (the seed tutorial's Part 1).

    Args:
        model: from ``load``.
        clean_prompt: the prompt whose states are restored.
        corrupted_prompt: the corrupted run's prompt, aligned with the clean one as ``trace`` aligns
            them when their token counts differ (each clean state goes to its aligned position;
            positions without a counterpart are not restored); None: the clean prompt with the
            subject's embeddings noised (`subject` and the noise settings).
        kind: "hidden", "mlp" or "attn" (or an alias: "output", "self_attn", ...): which output is restored.
        layers: the layers restored, all at once (no window).
        positions: restored together, as ``trace`` takes them: "whole" (every position, the default),
            "subject", "subject-last" (both need `subject`), "last", "0-4", token indices, ... The old
            spelling "all" still means "whole", with a deprecation warning.
        subject: the subject, for noise and for "subject-last".
        k: the number of top tokens returned.
        **settings: noise, samples, seed, replace (as in ``trace``).

    Returns:
        A PatchedRun: ``probs`` [vocab], ``top`` [(text, prob)], ``restored``.

    Raises:
        InputError: bad prompts, kind, layers or positions.
    """
    _check_model(model)
    _check_count(k, "k")
    _check_keywords(settings, SETTING_NAMES, "patch")
    kind = kind_name(kind)
    config = TraceSettings(**settings)
    prep = prepare(model, clean_prompt, subject or None, settings=config, corrupted_prompt=corrupted_prompt)
    T = len(prep.clean)
    layer_list = _layer_list(layers, model.n_layers)
    positions = positions_together(positions)
    if positions in ("subject", "subject-last") and prep.subject is None:
        raise InputError(f'positions="{positions}" needs the subject')
    chosen = resolve_positions(positions, prep.subject or (0, T), T)
    kept = [p for p in chosen if prep.mapping[p] is not None]
    if not kept:
        raise InputError("none of the chosen positions has a counterpart in the corrupted prompt")
    dists, _ = restored_distributions(model, prep, Restoration(kind, tuple(layer_list), tuple(kept)))
    probs = dists[:, 0].mean(axis=0)
    return PatchedRun(probs, [(p.text, p.prob) for p in top_predictions(model.tokenizer, probs, k)],
                      {"kind": kind, "layers": layer_list, "positions": kept})


def sweep(model: Tracer, facts: str = "known_1000", output: str = "results.jsonl", *, limit: int | None = None,
          filter: str = "rome", on_event=None, cancel: threading.Event | None = None, **settings):
    """Trace many facts into a resumable JSON-lines file (one line per fact), as ROME's sweep.

    Args:
        model: from ``load``.
        facts: "known_1000" (ROME's facts, shipped with tracer-tui), a path to a file of facts in that
            format, or a file of prompt pairs {prompt, corrupted_prompt, subject, target?} (traced by
            substitution); a JSON list, JSON Lines or CSV with a header row.
        output: the results file; calling again with the same settings resumes it.
        limit: only the first `limit` facts.
        filter: "rome" (the clean top token, stripped, equals the whole attribute), "first-token" or
            "none" (every fact). Prompt pairs with a target are kept when the clean top token is the
            target's first token (any filter but "none"); pairs without one always are.
        on_event: called with each sweep event (FactDone, FactSkipped, ...).
        cancel: a threading.Event; once set, the sweep stops after the fact in hand (the file stays valid).
        **settings: TraceSettings' fields (kinds, samples, noise, replace, window, seed, sever), and
            skip_flagged: warning codes (tracer.guards; "flagged" for the three that void a reading)
            whose facts are written as skipped ("flagged:CODE") and left out of the report (default: none).

    Returns:
        A SweepSummary (kept, skipped, skipped_by_reason, traced_now, cancelled, seconds, ...).
        Under ``mlx.launch`` the facts are sharded over the ranks (tracer.sweeps.distributed): rank 0's
        summary covers the whole run and names in ``missing`` the facts no rank finished.

    Raises:
        InputError: unreadable facts, a results file written with other settings, bad settings.
    """
    from .inputs.facts_file import load_facts
    from .sweeps.distributed import sweep as sharded_sweep
    from .sweeps.results import SweepConfig
    from .sweeps.run import TracerBackend

    _check_model(model)
    _check_path(facts, "facts")
    _check_path(output, "output")
    _check_keywords(settings, (*SETTING_NAMES, "skip_flagged"), "sweep")
    fact_list = load_facts(facts)
    if limit is not None:
        _check_count(limit, "limit")
        fact_list = fact_list[:limit]
    config = SweepConfig(filter=filter, **settings).with_mode(fact_list)
    return sharded_sweep(lambda: TracerBackend(model), fact_list, output, config, on_event=on_event, cancel=cancel)


def report(results: str, *, aggregate: str = "rome"):
    """The average indirect effects of a sweep (ROME's statistics by default).

    Args:
        results: a sweep's results file, or a directory of ROME's knowledge_*.npz case files.
        aggregate: "rome" (ROME's notebook: pooled token rows, one baseline) or "per-fact".

    Returns:
        A SweepReport: ``curves[kind][group].mean`` per layer (the AIE), ``.low``/``.high`` (its 95%
        interval, ROME's band), ``.peak_counts`` (facts whose own curve peaks at each layer),
        ``total_effect``, ``severed_paths`` (with sweep --sever), ``to_dict()``.

    Raises:
        InputError: a missing or malformed results file.
    """
    from .sweeps.aggregate import load_report

    _check_path(results, "results")
    if aggregate not in ("rome", "per-fact"):
        raise InputError(f"unknown aggregate {aggregate!r}: choose rome or per-fact")
    return load_report(results, aggregate)


def inspect(model: Tracer, result_or_request, kind: str, layer: int, *, token: int | None = None,
            k: int = 5) -> PatchedRun:
    """The top-k next tokens of one patched cell of a trace (the grid cell's whole distribution).

    Args:
        model: from ``load``.
        result_or_request: a TraceResult (from ``trace``) or the TraceRequest it ran.
        kind: "hidden", "mlp" or "attn".
        layer: the cell's layer (the centre of the window for mlp and attn, as in the grid).
        token: the clean-prompt index restored; None: the trace's chosen positions, or the
            subject's last token when the trace covered all positions.
        k: how many top tokens.

    Returns:
        A PatchedRun: ``probs`` [vocab] (mean over the noise samples), ``top`` [(text, prob)],
        ``restored`` (kind, layers, positions, corruption, samples). ``probs[result.target_id]``
        equals the grid cell ``result.grid(kind)[row, layer]``.

    Raises:
        InputError: an unknown kind, a layer or token out of range, k < 1.
    """
    from .core.inspection import inspect_cell

    _check_model(model)
    request = result_or_request.request if isinstance(result_or_request, TraceResult) else result_or_request
    if not isinstance(request, TraceRequest):
        raise InputError(f"inspect needs a TraceResult or a TraceRequest (got {type(result_or_request).__name__})")
    return inspect_cell(model, request, kind, layer, token=token, k=k)


def robustness(model: Tracer, prompt: str, subject: str, **options):
    """Trace one fact under several corruptions and say, per kind, whether the peak moves.

    The corruptions: Gaussian noise s3 (ROME's default, the reference), s1.5 and s6; uniform
    noise with the std of s3; s3 noise replacing the subject's embeddings; and substitution by
    up to `substitutes` known_1000 subjects of the same token length (of the fact's relation
    where known_1000 has the subject). Every variant traces the same target.

    Args:
        model: from ``load``.
        prompt: the clean prompt.
        subject: the words corrupted.
        **options: kinds (("hidden", "mlp", "attn")), positions ("all"), target (None: the clean
            run's top token), samples (10), seed (1), window (10), substitutes (3), facts
            ("known_1000", or Fact records), on_event (RobustnessProgress events), cancel
            (a threading.Event).

    Returns:
        A RobustnessResult: ``runs`` (per variant: probabilities, total effect, warning codes,
        ``peaks[kind]``), ``verdicts[kind]`` (``.text``, ``.label``), ``verdict`` (one line),
        ``to_text()``, ``to_dict()``.

    Raises:
        InputError: bad input (the message says which).
        TraceCancelled: `cancel` was set.
    """
    from .analyses.robustness import robustness as run_robustness

    _check_model(model)
    _check_keywords(options, tuple(p for p in inspect_module.signature(run_robustness).parameters
                                   if p not in ("model", "prompt", "subject")), "robustness")
    return run_robustness(model, prompt, subject, **options)
