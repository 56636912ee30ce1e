"""tracer.figures: hand-written SVG heatmaps and report plots, matplotlib PDF/PNG, the CLI's --plot/--plots.

Colours are checked against the documented scale (tracer/figures/svg.py): ColorBrewer anchors at
t = i/8, linear interpolation, channels rounded; the positions t come from ROME's scales
(P(target) from the corrupted probability to the grid's max; recovery 0-100 %).
"""

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from tracer import figures
from tracer.cli import run_cli
from tracer.errors import InputError
from tracer.figures.report import band
from tracer.sweeps.report import load_report
from tracer.types import Prediction, TraceRequest, TraceResult

SVG = "{http://www.w3.org/2000/svg}"
PURPLES = ("#fcfbfd", "#efedf5", "#dadaeb", "#bcbddc", "#9e9ac8", "#807dba", "#6a51a3", "#54278f", "#3f007d")
GREENS = ("#f7fcf5", "#e5f5e0", "#c7e9c0", "#a1d99b", "#74c476", "#41ab5d", "#238b45", "#006d2c", "#00441b")
REDS_TOP = "#67000d"

# corrupted P 0.1 and grid max 0.9: t = (p - 0.1) / 0.8, so 0.3 -> 0.25 (anchor 2), 0.5 -> 0.5 (anchor 4)
PROB = [
    [0.05, 0.14, 0.2, 0.3],
    [0.5, 0.9, None, 0.1],
    [0.1, 0.2, 0.3, 0.4],
    [0.1, 0.1, 0.1, 0.1],
    [0.2, 0.3, 0.4, 0.5],
]
TOKENS = ["The", " Eiff<el", " &Tower", " is\x1b", " in"]


def make_result(kinds=("hidden", "mlp", "attn"), positions="all", prob=PROB, recovery=None, corrupted=0.1):
    request = TraceRequest("The Eiff<el &Tower is in", "Eiff<el &Tower", kinds=kinds, window=4)
    rows = prob if positions == "all" else prob[:1]
    recovery = recovery or [[-20.0, 50.0, 150.0, None] for _ in rows]
    return TraceResult(
        model="/models/Smol&LM2-135M.gguf", tokens=list(TOKENS), subject_range=(1, 3), target_id=7,
        target_text=" Paris", clean_prob=0.8, corrupted_prob=corrupted, clean_top=[Prediction(7, " Paris", 0.8)],
        corrupted_top=[Prediction(8, " x", 0.3)], corrupted_top_id=8, noise_std=0.3, corruption="noise",
        positions=positions, request=request,
        grids={k: {"prob": rows, "recovery": recovery, "logit_diff": rows} for k in kinds},
    )


def parse(svg: str) -> ET.Element:
    assert svg.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(svg.encode("utf-8"))


def cells(root) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]


def texts(root, cls: str) -> list[str]:
    return [t.text for t in root.iter(f"{SVG}text") if t.get("class") == cls]


def fill_at(root, n_layers: int, row: int, layer: int) -> str:
    return cells(root)[row * n_layers + layer].get("fill")


# ---- one trace's grid ------------------------------------------------------------------------


def test_grid_svg_one_rect_per_cell_coloured_on_romes_scale():
    root = parse(figures.grid_svg(make_result(), "hidden"))
    assert len(cells(root)) == 5 * 4
    assert fill_at(root, 4, 0, 0) == PURPLES[0]  # 0.05 is below the corrupted P: the floor colour
    assert fill_at(root, 4, 2, 0) == PURPLES[0]  # exactly the corrupted P
    assert fill_at(root, 4, 1, 1) == PURPLES[8]  # the grid's max
    assert fill_at(root, 4, 0, 2) == PURPLES[1]  # t = 0.125
    assert fill_at(root, 4, 0, 3) == PURPLES[2]  # t = 0.25
    assert fill_at(root, 4, 1, 0) == PURPLES[4]  # t = 0.5
    # 0.14: t = 0.05, 0.4 of the way from anchor 0 (252,251,253) to anchor 1 (239,237,245)
    # -> (246.8, 245.4, 249.8) -> (247, 245, 250)
    assert fill_at(root, 4, 0, 1) == "#f7f5fa"
    assert fill_at(root, 4, 1, 2) == "url(#missing-hidden-prob)"  # a cell without a value: hatched grey
    assert root.find(f".//{SVG}pattern[@id='missing-hidden-prob']") is not None
    assert texts(root, "cbar-label") == ["p(Paris)"]
    ticks = [float(t) for t in texts(root, "cbar-tick")]
    assert min(ticks) >= 0.1 and max(ticks) <= 0.9 and len(ticks) >= 3


def test_kinds_use_romes_colour_maps_titles_and_axis_labels():
    svgs = figures.trace_svgs(make_result())
    assert list(svgs) == ["hidden", "mlp", "attn"]
    hidden, mlp, attn = (parse(svgs[k]) for k in ("hidden", "mlp", "attn"))
    assert texts(hidden, "title") == ["Impact of restoring state after corrupted input"]
    assert texts(mlp, "title") == ["Impact of restoring MLP after corrupted input"]
    assert texts(attn, "title") == ["Impact of restoring Attn after corrupted input"]
    assert texts(hidden, "xlabel") == ["single restored layer within Smol&LM2-135M"]
    assert texts(mlp, "xlabel") == ["center of interval of 4 restored MLP layers"]
    assert texts(attn, "xlabel") == ["center of interval of 4 restored Attn layers"]
    assert fill_at(mlp, 4, 0, 3) == GREENS[2]
    assert fill_at(attn, 4, 1, 1) == REDS_TOP
    assert texts(hidden, "xtick") == ["0", "1", "2", "3"]


def test_recovery_is_drawn_on_a_fixed_0_to_100_scale():
    root = parse(figures.grid_svg(make_result(), "hidden", "recovery"))
    row = [fill_at(root, 4, 0, layer) for layer in range(4)]
    assert row == [PURPLES[0], PURPLES[4], PURPLES[8], "url(#missing-hidden-recovery)"]  # -20, 50, 150, None
    assert texts(root, "cbar-label") == ["recovery %"]
    assert [float(t) for t in texts(root, "cbar-tick")] == [0, 20, 40, 60, 80, 100]
    # recovery not available (total effect too small): every cell is None, every cell hatched
    none = make_result(recovery=[[None] * 4 for _ in range(5)])
    assert {c.get("fill") for c in cells(parse(figures.grid_svg(none, "mlp", "recovery")))} == {"url(#missing-mlp-recovery)"}


def test_flat_scale_draws_every_cell_at_the_floor():
    low = [[0.05] * 4 for _ in range(5)]  # nothing restored beyond the corrupted run
    root = parse(figures.grid_svg(make_result(prob=low), "hidden"))
    assert {c.get("fill") for c in cells(root)} == {PURPLES[0]}


def test_tokens_are_escaped_and_subject_tokens_marked():
    svg = figures.grid_svg(make_result(), "hidden")
    assert "Eiff&lt;el" in svg and "&amp;Tower" in svg and "Eiff<el" not in svg and "\x1b" not in svg
    root = parse(svg)
    assert texts(root, "row-label") == ["The", "␣Eiff<el*", "␣&Tower*", "␣is␛", "␣in"]
    assert cells(root)[4].find(f"{SVG}title").text == "␣Eiff<el*, layer 0: 0.5"


def test_noise_interval_in_the_tooltips():
    result = make_result(kinds=("hidden",))
    grid = result.grids["hidden"]
    grid["prob_low"] = [[v - 0.02 if v is not None else None for v in row] for row in PROB]
    grid["prob_high"] = [[v + 0.02 if v is not None else None for v in row] for row in PROB]
    tips = [c.find(f"{SVG}title").text for c in cells(parse(figures.grid_svg(result, "hidden")))]
    assert tips[1] == "The, layer 1: 0.14 (95% interval 0.12 to 0.16)"
    assert tips[2] == "The, layer 2: 0.2 (95% interval 0.18 to 0.22)"
    assert tips[0] == "The, layer 0: 0.05 (95% interval 0.03 to 0.07)"
    assert tips[8] == "␣&Tower*, layer 0: 0.1 (95% interval 0.08 to 0.12; indistinguishable from the corrupted run)"
    assert tips[6] == "␣Eiff<el*, layer 2: no value"


def test_chosen_positions_give_one_row():
    result = make_result(positions=[1, 2])
    root = parse(figures.grid_svg(result, "hidden"))
    assert len(cells(root)) == 4
    assert texts(root, "row-label") == ["␣Eiff<el* + ␣&Tower*"]


def test_axis_ticks_are_round_and_labelled_exactly():
    from tracer.figures.svg import nice_ticks, tick_labels

    assert nice_ticks(-0.7, 0.35) == [-0.5, -0.25, 0.0, 0.25]
    assert tick_labels([-0.5, -0.25, 0.0, 0.25]) == ["-0.50", "-0.25", "0", "0.25"]
    assert nice_ticks(0.0, 100.0) == [0, 20, 40, 60, 80, 100]
    assert tick_labels([0.0, 10.0, 20.0], "%") == ["0%", "10%", "20%"]
    assert tick_labels(nice_ticks(0.0, 1e-7)) == ["0", "2e-08", "4e-08", "6e-08", "8e-08", "1e-07"]


def test_output_is_deterministic_and_errors_are_input_errors():
    result = make_result()
    assert figures.grid_svg(result, "mlp") == figures.grid_svg(make_result(), "mlp")
    with pytest.raises(InputError, match="no 'bogus' grid"):
        figures.grid_svg(result, "bogus")
    with pytest.raises(InputError, match="unknown metric"):
        figures.grid_svg(result, "hidden", "nope")


def test_save_heatmap_svg_and_bad_suffix(tmp_path):
    result = make_result()
    path = figures.save_heatmap(result, str(tmp_path / "h.svg"), "attn")
    assert Path(path).read_text(encoding="utf-8") == figures.grid_svg(result, "attn")
    with pytest.raises(InputError, match=r"\.svg, \.pdf or \.png"):
        figures.save_heatmap(result, str(tmp_path / "h.jpg"), "attn")
    with pytest.raises(InputError, match="cannot write figure"):
        figures.save_heatmap(result, str(tmp_path / "missing" / "h.svg"), "attn")


def test_pdf_png_without_matplotlib_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(InputError, match=r"install tracer-tui\[plots\] \(matplotlib\) for PDF/PNG"):
        figures.save_heatmap(make_result(), str(tmp_path / "h.png"), "hidden")
    assert not (tmp_path / "h.png").exists()


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF-")])
def test_matplotlib_heatmaps_are_written(tmp_path, suffix, magic):
    pytest.importorskip("matplotlib")
    result = make_result()
    paths = figures.save_trace_plots(result, str(tmp_path / f"trace{suffix}"))
    assert paths == [str(tmp_path / f"trace_{k}{suffix}") for k in ("hidden", "mlp", "attn")]
    for p in paths:
        data = Path(p).read_bytes()
        assert data.startswith(magic) and len(data) > 2000
    one = figures.save_trace_plots(make_result(kinds=("mlp",)), str(tmp_path / f"one{suffix}"), metric="recovery")
    assert one == [str(tmp_path / f"one{suffix}")]


def test_matplotlib_shows_dollar_signs_literally(tmp_path):
    pytest.importorskip("matplotlib")
    result = make_result(kinds=("hidden",))
    result.tokens = ["$", " $x^{$", " 5$", " \\frac", " in"]  # " $x^{$" as mathtext raises ValueError
    result.target_text = " $"
    path = figures.save_heatmap(result, str(tmp_path / "d.png"), "hidden")
    assert Path(path).read_bytes().startswith(b"\x89PNG")
    assert "␣$x^{$*" in texts(parse(figures.grid_svg(result, "hidden")), "row-label")


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
