"""The trace screen's plain steps: tokenizing for the strip, the request from the form, the
positions a run restores. No widgets are kept here; the screen passes itself where needed."""

from __future__ import annotations

from tracer.errors import user_message
from tracer.events import Started
from tracer.types import TraceRequest

from .. import exporting
from ..gridmodel import MODES
from ..messages import CellInspected
from ..widgets.settings import SettingsError


def preview_tokens(engine, prompt: str, subject: str) -> tuple[list[str], tuple[int, int] | None, str]:
    """(tokens, subject range or None, note) for the token strip, on any thread (Engine.tokenize uses
    no MLX). Bad input comes back as the note."""
    try:
        tokens, _ = engine.tokenize(prompt)
    except Exception as exc:  # bad input (TracerError) or a bug: one line, never a crash
        return [], None, user_message(exc)
    if not subject.strip():
        return list(tokens), None, "the subject is empty"
    try:
        _, span = engine.tokenize(prompt, subject)
    except Exception as exc:
        return list(tokens), None, user_message(exc)
    return list(tokens), (tuple(span) if span else None), ""


def build_request(screen) -> tuple[TraceRequest | None, str, str]:
    """(request, problem, note) from the screen's form, token strip and settings panel: the request,
    or None and the problem in words; the note is a log line (e.g. the strip was not ready)."""
    form = screen.form.values()
    problem = None
    if not form.prompt.strip():
        problem = "the prompt is empty"
    elif not form.subject.strip():
        problem = "the subject is empty"
    elif form.subject.strip() not in form.prompt:
        problem = f"subject {form.subject!r} is not in the prompt"
    if problem is None:
        try:
            settings = screen.panel.read()
        except SettingsError as exc:
            problem = str(exc)
    if problem:
        return None, problem, ""
    positions: str | tuple[int, ...] = "all"
    note = ""
    if screen.view_mode == "positions":
        strip = screen.strip
        if strip.is_current(form.prompt, form.subject):
            positions = strip.positions
            if not positions:
                return None, "choose at least one token in the strip (click or space)", ""
        else:
            positions = "subject-last"
            note = "token strip not ready: restoring the subject's last token"
    try:
        request = TraceRequest(form.prompt, form.subject, corrupted_prompt=form.corrupted, target=form.target,
                               positions=positions, **settings.trace.as_kwargs())
    except Exception as exc:  # InputError from the request's own checks
        return None, user_message(exc), note
    return request, "", note


def started_positions(request: TraceRequest, event: Started) -> tuple[int, ...]:
    """The positions the running request restores, as token indices (empty for all tokens)."""
    positions = request.positions
    if positions == "all":
        return ()
    if positions == "subject-last":
        return (event.subject_range[1] - 1,)
    n = len(event.tokens)
    return tuple(sorted({p % n for p in positions}))


def export_view(screen) -> None:
    """ctrl+s: the finished grid of the view on screen (a cancelled re-run keeps the previous one)
    as text, CSV, JSON and, where tracer.render.figures is there, SVG/PDF; the folder and names announced."""
    done = screen.finished.get(screen.view_mode)
    if done is None:
        screen.report(f"nothing to export: no finished {MODES[screen.view_mode]} trace yet", "warning")
        return
    grid, result = done
    try:
        folder = screen.panel.read().export_dir
    except SettingsError:
        folder = screen.export_dir
    view = grid.view(screen.view_kind, screen.metric, auto=screen.auto_scale)
    outcome = exporting.export_all(result, view, folder, screen.view_kind, screen.metric)
    if outcome.error:
        screen.report(f"export failed: {outcome.error}", "error")
        return
    screen.last_export = outcome.paths
    for note in outcome.notes:
        screen.report(note, "info", notify=False)
    screen.report(outcome.announcement, "done")


def aligned_tokens(engine, clean: list[str], corrupted_prompt: str | None) -> tuple[list[str] | None, str]:
    """(the corrupted prompt's token(s) under each clean token, note) for the token strip, as the
    user types: tracer.inputs.prompts.align_tokens (shared prefix and suffix token by token, the differing
    spans as blocks with their last tokens together), compared on token texts. None without a
    corrupted prompt; the note says why there is no alignment."""
    if not corrupted_prompt or not clean:
        return None, ""
    try:
        corrupted, _ = engine.tokenize(corrupted_prompt)
    except Exception as exc:  # bad input: one line under the strip
        return None, f"corrupted prompt: {user_message(exc)}"
    corrupted = list(corrupted)
    from tracer.inputs.prompts import align_tokens

    try:
        mapping = align_tokens(list(clean), corrupted)["clean_to_corrupted"]
    except Exception as exc:  # InputError: no alignment makes sense; its message says what to do
        return None, f"corrupted prompt: {user_message(exc)}"
    out, last = [], -1
    for j in mapping:
        if j is None:
            out.append("")
            continue
        out.append("".join(corrupted[last + 1:j + 1]) or corrupted[j])  # untaken tokens go with the next chip
        last = max(last, j)
    return out, ""


def inspect_cell(screen) -> None:
    """F9: the top-k of the patched run of the number table's selected cell (Engine.inspect), shown as a notification and a log line."""
    done = screen.finished.get(screen.view_mode)
    if done is None:
        screen.report("nothing to inspect: no finished trace in this view yet", "warning")
        return
    grid, result = done
    row, layer = screen.table.cursor_coordinate.row, screen.table.cursor_coordinate.column - 1
    if not (0 <= row < len(grid.kinds if grid.mode == "positions" else grid.tokens) and 0 <= layer < grid.n_layers):
        screen.report("select a cell in the number table (F3) first", "warning")
        return
    kind, token = (grid.kinds[row], None) if grid.mode == "positions" else (screen.view_kind, row)
    where = f"{kind} layer {layer}" + (f" at {grid.tokens[token]!r}" if token is not None else "")

    def done_callback(future) -> None:  # engine thread: post only
        try:
            run = future.result()
        except Exception as exc:
            screen.post_message(CellInspected(where, None, user_message(exc)))
            return
        screen.post_message(CellInspected(where, run))

    try:
        future = screen.engine.inspect(result.request, kind, layer, token=token, k=5)
    except Exception as exc:  # a signature other than the one coded against: say so
        screen.report(f"inspect failed: {user_message(exc)}", "error")
        return
    future.add_done_callback(done_callback)
    screen.report(f"inspecting {where}…", notify=False)


def describe_patched(run) -> str:
    """A patched run (tracer.api.PatchedRun) in one line: "' Paris' 0.412, ' Rome' 0.051, …; P(target) …"."""
    preds = [(p.text, p.prob) if hasattr(p, "text") else tuple(p) for p in getattr(run, "top", [])]
    text = ", ".join(f"{t!r} {p:.3f}" for t, p in preds)
    target = (getattr(run, "restored", None) or {}).get("target") or {}
    if target.get("prob") is not None:
        text += f"; P({target.get('text', 'target')!r}) {target['prob']:.4f}"
    return text or str(run)


def show_inspected(screen, message) -> None:
    """Engine.inspect's answer (a CellInspected message) as a log line and a notification."""
    if message.error:
        screen.report(f"inspect {message.where}: {message.error}", "error")
    else:
        screen.report(f"top-5 restoring {message.where}: {describe_patched(message.run)}", "done")


def show_warnings(screen) -> None:
    """F8 / the badge: each warning of the trace on screen as a notification titled with its code."""
    warnings = screen.facts.badge.warnings
    if not warnings:
        screen.app.notify("no warnings for this trace", timeout=3)
    for w in warnings:
        screen.app.notify(str(w), title=getattr(w, "code", "note"), severity="warning", timeout=10)


def open_sweeps(screen) -> None:
    """F6: the sweep screen, with the settings panel's trace settings."""
    try:
        settings = screen.panel.read().trace
    except SettingsError as exc:
        screen.report(f"settings: {exc}", "error")
        return
    screen.app.open_sweeps(settings)


def open_robustness(screen) -> None:
    """The robustness view for the form's prompt and subject, with the settings' samples, seed,
    window and kinds."""
    from .robustness import RobustnessScreen

    form = screen.form.values()
    if not form.prompt.strip() or not form.subject.strip() or form.subject.strip() not in form.prompt:
        screen.report("robustness: give a prompt and a subject inside it", "error")
        return
    try:
        trace = screen.panel.read().trace
    except SettingsError as exc:
        screen.report(f"settings: {exc}", "error")
        return
    options = {"samples": trace.samples, "seed": trace.seed, "window": trace.window, "kinds": trace.kinds}
    if form.target:
        options["target"] = form.target
    screen.app.push_screen(RobustnessScreen(screen.engine, form.prompt, form.subject, options=options))


def toggle_scale(screen) -> None:
    """F7: ROME's fixed colour scales <-> the cells' own range."""
    screen.auto_scale = not screen.auto_scale
    screen.show_view()
    screen.app.notify("colour scale: " + ("auto (the cells' own range)" if screen.auto_scale else
                                          "fixed (recovery 0-100%, probability p_corrupted..p_clean)"), timeout=3)
