"""tracer.render.figures: hand-written SVG heatmaps and report plots, matplotlib PDF/PNG, the CLI's --plot/--plots.

Colours are checked against the documented scale (tracer/render/figures/svg.py): ColorBrewer anchors at
t = i/8, linear interpolation, channels rounded; the positions t come from ROME's scales
(P(target) from the corrupted probability to the grid's max; recovery 0-100 %).
"""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tracer.errors import InputError
from tracer.render import figures
from tracer.types import Prediction, TraceRequest, TraceResult

import pytest

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
    from tracer.render.figures.svg import nice_ticks, tick_labels

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
