"""Themes checked (issue 24.6): each bundled theme rendered, the contrast of text against its
background (WCAG 2 ratio >= 4.5, body text) for the status line, the form's labels, the token strip's
chip, subject, selected and cursor states, the grid's headline, legend and readout. Fake engine."""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine
from textual.widgets import Label
from tui_helpers import ready, run_and_wait

from tui.app import make_app

THEMES = ("dark", "light", "high-contrast")


def luminance(rgb) -> float:
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg, bg) -> float:
    a, b = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_the_contrast_formula_against_known_pairs():
    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast((119, 119, 119), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)  # #777 on white: fails


def colours(style, widget) -> tuple[tuple, tuple]:
    """(foreground, background) RGB of a rich style drawn on `widget` (its own background where the
    style has none)."""
    base = widget.rich_style
    fg = (style.color or base.color).get_truecolor()
    bg = (style.bgcolor or base.bgcolor).get_truecolor()
    return tuple(fg), tuple(bg)


@pytest.mark.parametrize("theme", THEMES)
async def test_text_contrast_of_every_bundled_theme(theme):
    app = make_app(engine=FakeEngine(), theme=theme)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        assert app.theme == theme
        checks = {
            "status line": colours(ts.status.status_text.rich_style, ts.status.status_text),
            "form label": colours(ts.form.query(Label).first().rich_style, ts.form.query(Label).first()),
            "headline": colours(ts.pane.peak.rich_style, ts.pane.peak),
            "legend": colours(ts.pane.legend.rich_style, ts.pane.legend),
            "readout": colours(ts.pane.readout.rich_style, ts.pane.readout),
        }
        strip = ts.strip
        for part in ("chip", "subject", "selected", "label"):
            checks[f"strip {part}"] = colours(strip.get_component_rich_style(f"token-strip--{part}"), strip)
        strip.focus()
        await pilot.pause()
        for part in ("chip", "subject", "selected"):  # the cursor on each kind of chip
            style = strip.get_component_rich_style(f"token-strip--{part}") + strip.get_component_rich_style(
                "token-strip--cursor", partial=True)
            checks[f"strip cursor on {part}"] = colours(style, strip)
        for part in ("chip", "subject", "selected"):  # the cursor keeps the chip's own colours
            assert checks[f"strip cursor on {part}"] == checks[f"strip {part}"] or part == "chip", part
        assert checks["strip subject"] != checks["strip chip"] != checks["strip selected"]  # three looks
        plain = strip.get_component_rich_style("token-strip--chip")
        assert not plain.underline  # chips are not drawn as links
        low = {name: round(contrast(fg, bg), 2) for name, (fg, bg) in checks.items() if contrast(fg, bg) < 4.5}
        assert not low, f"{theme}: contrast below 4.5: {low} ({checks})"
