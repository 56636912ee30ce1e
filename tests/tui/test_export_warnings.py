"""Issue 25, item 3: the app's exports carry the trace's warnings (text first, CSV comments, SVG caption)."""

from __future__ import annotations

from tracer.guards import warning_lines

from textual.widgets import Input
from tui_helpers import ready, wait_for
from tui_helpers import result as finished_result

from tui.app import make_app


async def test_app_exports_carry_the_warnings(engine, tmp_path):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one("#samples", Input).value = "2"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: finished_result(app.trace_screen) is not None, 120, "the run")
        result = finished_result(app.trace_screen)
        assert result.warnings  # the tiny random model's total effect is small
        app.query_one("#export-dir", Input).value = str(tmp_path / "out")
        await pilot.press("ctrl+s")
        paths = app.trace_screen.last_export
        lines = warning_lines(result.warnings)
        text = open(paths["txt"], encoding="utf-8").read()
        assert text.startswith(lines[0][:60])  # the warnings lead, before the drawing
        assert sum(text.count(line.split(": ", 1)[0] + ":") for line in lines) == len(lines)  # once each
        csv_text = open(paths["csv"], encoding="utf-8").read()
        assert all(f"# {line}" in csv_text for line in lines)
        svg = open(paths["svg"], encoding="utf-8").read()
        assert 'class="caption"' in svg and lines[0].split(":")[0] in svg
