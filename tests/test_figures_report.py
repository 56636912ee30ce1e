"""tracer.render.figures for sweep reports (the AIE line plot's 95% band, the AIE heatmap, the severed-path
chart) and the CLI's figure options (trace --plot, sweep-report --plots): files, exit codes, messages."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

from tracer.cli import run_cli
from tracer.errors import InputError
from tracer.render import figures
from tracer.render.figures.report import band
from tracer.sweeps.aggregate import load_report

import pytest
from test_figures import GREENS, PURPLES, SVG, cells, fill_at, parse, texts

# ---- a sweep report ---------------------------------------------------------------------------

# Two facts, 4 tokens, a one-token subject at 1, 3 layers. Pooled last-subject rows: [.5,.3,.1] and
# [.3,.5,.3]: mean [.4,.4,.2]; baseline = mean low = (0.1 + 0.3)/2 = 0.2; AIE [.2,.2,0];
# population std [.1,.1,.1]; n = 2 rows -> band AIE ± 1.96 * 0.1 / sqrt(2).
# Last token rows [.1,.4,.6] and [.1,.2,.4]: AIE [-.1,.1,.3] -> heat [0,.1,.3]; vmax = 0.3.
FACTS = [
    (0.1, 0.7, [[0.1, 0.1, 0.1], [0.5, 0.3, 0.1], [0.2, 0.2, 0.2], [0.1, 0.4, 0.6]]),
    (0.3, 0.9, [[0.1, 0.1, 0.1], [0.3, 0.5, 0.3], [0.2, 0.2, 0.2], [0.1, 0.2, 0.4]]),
]


def write_results(path, kinds=("hidden", "mlp"), kept=True, sever=()) -> str:
    config = {"model": "models/tiny-llama", "kinds": list(kinds), "window": 10, "samples": 2, "sever": list(sever)}
    with open(path, "w", encoding="utf-8") as f:
        for i, (low, high, prob) in enumerate(FACTS):
            grids = {k: {"prob": prob} for k in kinds}
            if "mlp" in sever:  # MLP severed: restoring the last subject token does nothing (row 1 = row 0)
                grids["hidden-severed-mlp"] = {"prob": [prob[0], prob[0], *prob[2:]]}
            if "attn" in sever:  # attention severed: as the ordinary series
                grids["hidden-severed-attn"] = {"prob": prob}
            if kept:
                line = {"status": "kept", "known_id": i, "tokens": ["A", " b", " c", " d"], "subject_range": [1, 2],
                        "clean_prob": high, "corrupted_prob": low, "grids": grids, "config": config}
            else:
                line = {"status": "skipped", "known_id": i, "skipped": "wrong-prediction", "config": config}
            f.write(json.dumps(line) + "\n")
    return str(path)


def test_band_is_mean_plus_minus_1_96_std_over_sqrt_n(tmp_path):
    report = load_report(write_results(tmp_path / "r.jsonl"))
    low, high = band(report.curves["hidden"]["last_subject"])
    half = 1.96 * 0.1 / math.sqrt(2)
    assert low == pytest.approx([0.2 - half, 0.2 - half, -half])
    assert high == pytest.approx([0.2 + half, 0.2 + half, half])
    assert band(report.curves["hidden"]["middle_subject"]) is None  # no rows: no band
    # per-fact averaging: effects [.4,.2,0] (fact A, low .1) and [0,.2,0] (fact B, low .3): mean [.2,.2,0],
    # std over the facts [.2,0,0], n = 2 facts
    per_fact = load_report(write_results(tmp_path / "r.jsonl"), "per-fact")
    low, high = band(per_fact.curves["hidden"]["last_subject"])
    assert low == pytest.approx([0.2 - 1.96 * 0.2 / math.sqrt(2), 0.2, 0.0])
    assert high == pytest.approx([0.2 + 1.96 * 0.2 / math.sqrt(2), 0.2, 0.0])
    # a report whose curves carry their own interval: used as it is
    given = SimpleNamespace(mean=[1.0, 2.0], std=[9.0, 9.0], n=4, low=[0.5, 1.5], high=[1.5, 2.5])
    assert band(given) == ([0.5, 1.5], [1.5, 2.5])


def test_report_svgs_heatmap_and_lines(tmp_path):
    report = load_report(write_results(tmp_path / "r.jsonl"))
    svgs = figures.report_svgs(report)
    assert list(svgs) == ["aie-lines-hidden", "aie-heatmap-hidden", "aie-lines-mlp", "aie-heatmap-mlp"]
    heat = parse(svgs["aie-heatmap-hidden"])
    assert texts(heat, "title") == ["Avg Indirect Effect of hᵢ⁽ˡ⁾ over 2 prompts"]
    assert texts(heat, "xlabel") == ["single patched layer within tiny-llama"]
    assert texts(heat, "cbar-label") == ["AIE"]
    assert texts(heat, "row-label") == ["First subject token", "Middle subject tokens", "Last subject token",
                                        "First subsequent token", "Further tokens", "Last token"]
    assert len(cells(heat)) == 6 * 3
    assert [fill_at(heat, 3, 5, layer) for layer in range(3)] == [PURPLES[0], "#c6c7e1", PURPLES[8]]  # t = 0, 1/3 (anchors 2-3, f 2/3), 1
    # last subject 0.2 of vmax 0.3: t = 2/3, x = 5.33 between (128,125,186) and (106,81,163) -> (121,110,178)
    assert fill_at(heat, 3, 2, 0) == "#796eb2"
    assert {fill_at(heat, 3, 1, layer) for layer in range(3)} == {"url(#missing-aie-heatmap-hidden)"}
    mlp = parse(svgs["aie-heatmap-mlp"])
    assert texts(mlp, "xlabel") == ["center of interval of 10 patched mlp layers"]
    assert fill_at(mlp, 3, 5, 2) == GREENS[8]  # the shared vmax: the hidden kind's
    lines = parse(svgs["aie-lines-mlp"])
    assert texts(lines, "title") == ["Average indirect effect of a run of 10 MLP lookups"]
    curves = [p for p in lines.iter(f"{SVG}polyline") if p.get("class") == "curve"]
    bands = [p for p in lines.iter(f"{SVG}polygon") if p.get("class") == "band"]
    labels = ["First subject token", "Last subject token", "First subsequent token", "Last token"]
    assert [c.get("data-series") for c in curves] == labels  # groups without rows are left out
    assert [b.get("data-series") for b in bands] == labels
    assert all(len(c.get("points").split()) == 3 for c in curves)
    assert texts(lines, "legend") == labels
    assert figures.report_svgs(report) == svgs


def test_severed_paths_column_chart(tmp_path):
    report = load_report(write_results(tmp_path / "r.jsonl", kinds=("hidden",), sever=("mlp", "attn")))
    svgs = figures.report_svgs(report)
    assert list(svgs)[-1] == "severed-paths"
    assert texts(parse(svgs["aie-lines-hidden-severed-mlp"]), "title") == [
        "Average indirect effect of a single hidden vector, MLP severed"]
    root = parse(svgs["severed-paths"])
    assert texts(root, "title") == ["Causal effect of states at the early site with Attn or MLP modules severed"]
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    names = ["Effect of single state on P", "Effect with Attn severed", "Effect with MLP severed"]
    assert [b.get("data-series") for b in bars] == [n for n in names for _ in range(3)]  # ROME's order
    assert texts(root, "legend") == names
    ordinary, attn, mlp = bars[0:3], bars[3:6], bars[6:9]
    assert [float(b.get("height")) for b in ordinary] == [float(b.get("height")) for b in attn]
    # AIE 0.2 (ordinary, layer 0) and -0.1 (MLP severed: 0.1 - baseline 0.2): heights in the ratio 2 : 1,
    # the ordinary column above the zero line, the severed one below it
    assert float(ordinary[0].get("height")) == pytest.approx(2 * float(mlp[0].get("height")), abs=0.02)
    assert float(ordinary[0].get("y")) + float(ordinary[0].get("height")) == pytest.approx(float(mlp[0].get("y")), abs=0.01)
    if figures.mpl.have_matplotlib():
        paths = figures.save_report_plots(report, str(tmp_path / "figs"), formats=("png",))
        assert str(tmp_path / "figs" / "severed-paths.png") in paths
        assert (tmp_path / "figs" / "severed-paths.png").read_bytes().startswith(b"\x89PNG")


def test_save_report_plots(tmp_path):
    report = load_report(write_results(tmp_path / "r.jsonl", kinds=("attn",)))
    out = tmp_path / "figs" / "sub"
    with pytest.raises(InputError, match="cannot create figure folder"):
        figures.save_report_plots(report, str(out))
    paths = figures.save_report_plots(report, str(tmp_path / "figs"))
    assert paths == [str(tmp_path / "figs" / "aie-lines-attn.svg"), str(tmp_path / "figs" / "aie-heatmap-attn.svg")]
    for p in paths:
        parse(Path(p).read_text(encoding="utf-8"))
    with pytest.raises(InputError, match="unknown figure format gif"):
        figures.save_report_plots(report, str(tmp_path / "figs"), formats=("gif",))
    skipped = load_report(write_results(tmp_path / "s.jsonl", kept=False))
    assert figures.report_svgs(skipped) == {}
    with pytest.raises(InputError, match="no kept facts"):
        figures.save_report_plots(skipped, str(tmp_path / "none"))


def test_save_report_plots_pdf_png(tmp_path):
    pytest.importorskip("matplotlib")
    report = load_report(write_results(tmp_path / "r.jsonl"))
    paths = figures.save_report_plots(report, str(tmp_path / "figs"), formats=("png", "pdf"))
    assert len(paths) == 8
    for p in paths:
        data = Path(p).read_bytes()
        assert data.startswith(b"%PDF-" if p.endswith(".pdf") else b"\x89PNG") and len(data) > 2000


# ---- the command line -------------------------------------------------------------------------


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_sweep_report_plots_option(tmp_path, capsys):
    results = write_results(tmp_path / "r.jsonl")
    code = run_cli(["sweep-report", results, "--format", "json", "--plots", str(tmp_path / "figs")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["facts"]["kept"] == 2
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "aie-heatmap-hidden.svg", "aie-heatmap-mlp.svg", "aie-lines-hidden.svg", "aie-lines-mlp.svg"]
    assert f"wrote 4 figure(s) to {tmp_path / 'figs'}: aie-lines-hidden.svg" in captured.err


@pytest.mark.parametrize("extra, message", [
    (["--plots", "FILE"], "is a file"),
    (["--plots", "NOWHERE/a/b"], "cannot create figure folder"),
    (["--plots", "DIR", "--plot-formats", "svg,bmp"], "unknown figure format bmp"),
])
def test_sweep_report_bad_plots_exit_2(tmp_path, capsys, extra, message):
    results = write_results(tmp_path / "r.jsonl")
    extra = [str(tmp_path / "r.jsonl") if x == "FILE" else str(tmp_path / x) if x in ("NOWHERE/a/b", "DIR") else x
             for x in extra]
    assert run_cli(["sweep-report", results, *extra]) == 2
    line = _err_line(capsys)
    assert line.startswith("tracer-tui: error:") and message in line


@pytest.mark.parametrize("name, message", [
    ("grid.jpg", r"must end in .svg, .pdf or .png"),
    ("missing/grid.svg", "cannot write output file"),
])
def test_trace_bad_plot_exit_2_before_any_work(tmp_path, capsys, name, message):
    code = run_cli(["trace", "--model", str(tmp_path / "no-model"), "--prompt", "a b c", "--subject", "b",
                    "--plot", str(tmp_path / name)])
    assert code == 2
    line = _err_line(capsys)
    assert "argument --plot" in line and message in line  # the model (missing) was never loaded


def test_trace_plot_pdf_without_matplotlib_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = run_cli(["trace", "--prompt", "a b c", "--subject", "b", "--plot", str(tmp_path / "g.pdf")])
    assert code == 2
    assert "install tracer-tui[plots] (matplotlib) for PDF/PNG" in _err_line(capsys)


def test_trace_plot_writes_one_svg_per_kind(tmp_path, capsys, tiny_model_dir):
    code = run_cli(["trace", "--model", str(tiny_model_dir), "--prompt", "The Eiffel Tower is located in the city of",
                    "--subject", "Eiffel Tower", "--samples", "2", "--kinds", "hidden,attn", "--format", "csv",
                    "--plot", str(tmp_path / "grid.svg"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid_attn.svg", "grid_hidden.svg"]
    root = parse((tmp_path / "grid_attn.svg").read_text(encoding="utf-8"))
    labels = texts(root, "row-label")
    assert len(cells(root)) == len(labels) * 6  # the tiny model's 6 layers
    assert sum(label.endswith("*") for label in labels) >= 1
    assert texts(root, "title") == ["Impact of restoring Attn after corrupted input"]
    assert f"wrote {tmp_path / 'grid_hidden.svg'}, {tmp_path / 'grid_attn.svg'}" in captured.err
