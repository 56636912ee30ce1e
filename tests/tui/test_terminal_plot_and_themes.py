"""tracer.render.terminal_plot's text rendering, theme files, config, and what each side may import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tracer.render.terminal_plot import SHADES, draw_grid, format_value, peak, render_text, row_label

import pytest

from tui.config import load_config, save_config
from tui.themes import builtin_theme_dirs, heat_scale, load_themes, theme_from_toml

REPO = Path(__file__).resolve().parents[2]


def test_render_text_has_no_colour_and_every_cell_gets_its_own_characters():
    values = [[float(c) for c in range(12)], [None] * 11 + [5.0], [11.0 - c for c in range(12)]]
    text = render_text(values, ["hidden", "mlp", "attn"], title="t", metric="recovery", width=60)
    assert "\x1b[" not in text
    lines = text.splitlines()
    rows = {label: next(line for line in lines if line.lstrip().startswith(label + "┤")) for label in ("hidden", "mlp", "attn")}
    canvas = {label: line.split("┤", 1)[1].rstrip("│") for label, line in rows.items()}
    assert canvas["hidden"][0] == " " and canvas["hidden"][-1] == SHADES[-1]  # low left, high right
    assert canvas["attn"][0] == SHADES[-1] and canvas["attn"][-1] == " "
    assert canvas["mlp"].strip() == canvas["mlp"][-len(canvas["mlp"].strip()):]  # pending cells stay blank
    assert len(set(len(c) for c in canvas.values())) == 1
    assert "scale (recovery %)" in lines[-1] and "layer" in text


def test_cells_tile_the_canvas_exactly():
    """Every column of the drawing belongs to exactly one layer, in order, with none lost."""
    from plotext._figure import _figure_class as Figure

    n = 7
    for width in (40, 53, 97):
        fig = Figure()
        fig._limit_size(False, False)
        fig.theme("clear")
        fig.plotsize(width, 12)
        values = [[float(c % 2) for c in range(n)]]
        draw_grid(fig, values, ["r"], colour=None)
        line = next(x for x in fig.build().splitlines() if "┤" in x)
        canvas = line.split("┤", 1)[1].split("│")[0]
        canvas = canvas.replace("\x1b[0m", "")
        runs = [ch for i, ch in enumerate(canvas) if i == 0 or canvas[i - 1] != ch]
        assert len(runs) == n, (width, canvas)


def test_helpers():
    assert peak([[1.0, None], [3.0, 2.0]]) == (1, 0, 3.0)
    assert peak([[None]]) is None
    assert format_value(None, "prob") == "·" and format_value(64.21, "recovery") == "64.2"
    assert format_value(-1.5, "logit_diff") == "-1.50" and format_value(0.5, "prob") == "0.500"
    assert row_label(" Tower", True) == "␣Tower*" and row_label("\n") == "⏎"


def test_builtin_themes_load_from_the_source_tree():
    assert any(d.name in ("themes", "themes_data") for d in builtin_theme_dirs())
    loaded = load_themes()
    assert not loaded.errors
    assert {"dark", "light", "high-contrast"} <= set(loaded.themes)
    for theme in loaded.themes.values():
        assert {"heat-low", "heat-high", "heat-mlp"} <= set(theme.variables)


def test_bad_theme_text_is_a_readable_error():
    for text, message in [
        ("primary = ", "not valid TOML"),
        ("name = 'x'", "missing 'primary'"),
        ("primary = '#fff'\nbogus = 1", "unknown keys: bogus"),
        ("primary = '#fff'\n[heatmap]\nlow = 'nope'", "heatmap.low"),
    ]:
        with pytest.raises(ValueError, match=message):
            theme_from_toml(text, "x")


def test_heat_scale_falls_back_for_textual_themes():
    scale = heat_scale({"surface": "#000000", "accent": "#ffffff"})
    assert scale.at(0) == (0, 0, 0) and scale.at(1) == (255, 255, 255) and scale.at(float("nan")) == (0, 0, 0)
    assert heat_scale({"heat-low": "#000000", "heat-mlp": "#00ff00", "heat-high": "#ff0000"}, "mlp").at(1) == (0, 255, 0)


def test_config_round_trip_and_broken_file(config_dir):
    assert load_config() == ({}, None)
    assert save_config({"theme": "light"}) is None
    assert load_config() == ({"theme": "light"}, None)
    (config_dir / "config.json").write_text("{nope")
    data, error = load_config()
    assert data == {} and "could not read" in error


def _imports(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_ui_never_imports_mlx_and_the_engine_plot_never_imports_textual():
    ui = _imports("import tui.app, tui.exporting")
    assert "textual" in ui and not any(m == "mlx" or m.startswith("mlx.") for m in ui)
    plot = _imports("import tracer.render.terminal_plot, tracer.render.export")
    assert not any(m == "textual" or m.startswith("textual.") for m in plot)


def test_canvas_cache_gives_the_same_drawing():
    from plotext._figure import _figure_class as Figure

    values = [[float(c * r) for c in range(9)] for r in range(4)]
    cache: dict = {}
    drawings = []
    for _ in range(3):
        fig = Figure()
        fig._limit_size(False, False)
        fig.plotsize(70, 14)
        draw_grid(fig, values, ["a", "b", "c", "d"], title="t", colour=lambda t: (int(255 * t), 0, 0), canvas_cache=cache)
        drawings.append(fig.build())
    assert len(cache) == 1 and drawings[0] == drawings[1] == drawings[2]
