"""Issue 25, item 3: warnings travel with the numbers. Every saved format (text, CSV, SVG/PDF
captions) carries them; a trace whose total effect is small or whose corruption kept the target
leads with that, and names no peak."""

from __future__ import annotations

import csv
import dataclasses
import io

import tracer
from tracer.cli import run_cli
from tracer.core.tracing import Tracer
from tracer.guards import TraceWarning, leading_warnings, warning_lines
from tracer.models.load import load_model
from tracer.render import export, figures, trace_text

import pytest

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
KEPT = TraceWarning("corruption-kept-target", "the corruption kept the target ' Paris' as the top prediction")
WEAK = TraceWarning("weak-target", "the target ' the' is whitespace, punctuation or a stop word")


@pytest.fixture(scope="module")
def result(tiny_model_dir):
    model = Tracer(load_model(str(tiny_model_dir)))
    return tracer.trace(model, PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=2)


def with_warnings(result, warnings):
    return dataclasses.replace(result, warnings=list(warnings))


def test_warning_lines_put_the_voiding_ones_first():
    assert warning_lines([WEAK, KEPT, "a plain note"]) == [
        f"warning [corruption-kept-target]: {KEPT}", f"warning [weak-target]: {WEAK}", "warning [note]: a plain note"]
    assert leading_warnings([WEAK, KEPT]) == [KEPT]


def test_a_small_total_effect_leads_the_text_and_no_peak_is_named(result):
    gap = result.clean_prob - result.corrupted_prob
    assert gap < 0.05 and [w.code for w in result.warnings][0] in ("small-total-effect", "negative-total-effect")
    lines = trace_text.to_text(result).splitlines()
    assert lines[0].startswith(f"warning [{result.warnings[0].code}]: ")
    assert any(line.startswith("so no peak is named") for line in lines[:6])
    named = [line for line in lines if "peak" in line.replace("no peak is named", "").replace("(not a peak", "")]
    assert named == [], "a flagged trace names no peak"
    assert "hidden: largest " in "\n".join(lines) and f"(not a peak: {result.warnings[0].code})" in "\n".join(lines)


def test_a_kept_target_leads_even_with_a_large_effect(result):
    flagged = with_warnings(result, [WEAK, KEPT])
    lines = trace_text.to_text(flagged).splitlines()
    assert lines[0] == f"warning [corruption-kept-target]: {KEPT}"
    assert lines[1] == f"warning [weak-target]: {WEAK}"
    assert lines[2].startswith("so no peak is named")


def test_a_clean_trace_starts_with_the_model_and_names_its_peak(result):
    plain = with_warnings(result, [])
    text = trace_text.to_text(plain)
    assert text.startswith("model: ") and "warning [" not in text
    assert "hidden: peak " in text
    weak_only = trace_text.to_text(with_warnings(result, [WEAK]))
    assert weak_only.startswith(f"warning [weak-target]: {WEAK}\n\nmodel: ") and "hidden: peak " in weak_only


def test_csv_carries_the_warnings_as_comment_lines(result):
    text = export.to_csv(with_warnings(result, [WEAK, KEPT]))
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert comments[-2:] == [f"# warning [corruption-kept-target]: {KEPT}", f"# warning [weak-target]: {WEAK}"]
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    assert len(rows) == 2 * len(result.tokens) * result.n_layers


def test_svg_and_pdf_captions_carry_the_warnings(result, tmp_path):
    svg = figures.grid_svg(with_warnings(result, [KEPT]), "hidden")
    captions = [line for line in svg.splitlines() if 'class="caption"' in line]
    joined = " ".join(line.split(">", 1)[1].rsplit("</text>", 1)[0].strip() for line in captions)
    assert joined == f"warning [corruption-kept-target]: {KEPT}"  # wrapped into lines, nothing lost
    assert 'class="caption"' not in figures.grid_svg(with_warnings(result, []), "hidden")
    pytest.importorskip("matplotlib")
    spec = figures.trace.heatmap_spec(with_warnings(result, [KEPT]), "hidden")
    assert spec.caption == [f"warning [corruption-kept-target]: {KEPT}"]
    path = figures.save_heatmap(with_warnings(result, [KEPT]), str(tmp_path / "h.pdf"), "hidden")
    assert open(path, "rb").read(5) == b"%PDF-"


@pytest.mark.parametrize("fmt", ["text", "csv"])
def test_cli_output_file_and_stdout_carry_the_warnings(tmp_path, capsys, tiny_model_dir, fmt):
    out = tmp_path / f"out.{fmt}"
    argv = ["trace", "--model", str(tiny_model_dir), "--prompt", PROMPT, "--subject", SUBJECT, "--kinds", "hidden",
            "--samples", "2", "--format", fmt, "--quiet"]
    assert run_cli([*argv, "--output", str(out)]) == 0
    err = capsys.readouterr().err
    warned = [line.split(": ", 2)[2] for line in err.splitlines() if line.startswith("tracer-tui: warning: ")
              and "BLAS" not in line]
    assert warned, err
    saved = out.read_text()
    assert run_cli(argv) == 0
    shown = capsys.readouterr().out
    for text in (saved, shown):
        first = text.splitlines()[0]
        assert first.startswith("warning [" if fmt == "text" else "# model: ")
        for message in warned:
            assert message.split(":")[0] in text
    if fmt == "csv":
        assert any(line.startswith("# warning [") for line in saved.splitlines())
