"""Export files, themes (switch, persist, --theme, bad files), sizes, help and the palette."""

from __future__ import annotations

import csv
import json

from tracer.render import export

from textual.widgets import Footer, Input
from tui_helpers import notifications, ready, wait_for
from tui_helpers import result as finished_result

from tui.app import make_app
from tui.commands import TracerCommands
from tui.config import config_path
from tui.screens.help import HelpScreen
from tui.widgets.grid import GridPlot
from tui.widgets.token_strip import TokenStrip


async def finished_run(pilot):
    app = pilot.app
    await ready(pilot)
    app.query_one("#samples", Input).value = "2"
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: finished_result(app.trace_screen) is not None, 120, "the run")


async def test_export_writes_text_csv_and_json(engine, tmp_path):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+s")  # nothing yet: a warning, not a crash
        assert any("nothing to export" in m for _, m in notifications(app))
        await finished_run(pilot)
        app.query_one("#export-dir", Input).value = str(tmp_path / "out")
        await pilot.press("ctrl+s")
        paths = app.trace_screen.last_export
        assert paths and all(p.startswith(str(tmp_path / "out")) for p in paths.values())
        folder = str((tmp_path / "out").resolve())
        names = ", ".join(p.rsplit("/", 1)[1] for p in paths.values())
        assert (".txt" in names and ".csv" in names and ".json" in names)
        assert ("information", f"exported to {folder}/: {names}") in notifications(app)  # the folder and the names
        text = open(paths["txt"], encoding="utf-8").read()
        assert "\x1b[" not in text  # readable in any editor
        result = finished_result(app.trace_screen)
        assert "hidden · recovery % · all tokens" in text  # the drawing
        if result.recovery_available:
            assert "hidden - recovery %" in text
        else:  # the tiny model's total effect is below 0.05: the numbers show P(target) and say why
            assert "hidden - P(target)" in text and "recovery % is not available" in text
        assert "layer" in text and "clean P(target)" in text
        assert json.load(open(paths["json"])) == json.loads(json.dumps(export.to_json(result)))
        rows = list(csv.DictReader(line for line in open(paths["csv"]) if not line.startswith("#")))  # after any comments
        assert len(rows) == len(result.grids) * len(result.tokens) * 6
        # a second export in the same second gets its own name
        await pilot.press("ctrl+s")
        assert app.trace_screen.last_export["txt"] != paths["txt"]
        # an unusable folder: a notification and a log line, and the app carries on
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        app.query_one("#export-dir", Input).value = str(blocker / "sub")
        await pilot.press("ctrl+s")
        assert any(s == "error" and "export failed" in m for s, m in notifications(app))
        assert app.is_running


async def test_theme_switches_at_run_time_and_persists(engine, config_dir):
    app = make_app(engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.theme == "dark"
        assert {"dark", "light", "high-contrast"} <= set(app.available_themes)
        await pilot.press("ctrl+t")
        assert app.theme == "light"
        await pilot.pause()
        assert json.loads(config_path().read_text())["theme"] == "light"
        await pilot.press("ctrl+t")
        assert app.theme == "high-contrast"
        await ready(pilot)
    app = make_app(engine=engine)  # the next launch remembers
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.theme == "high-contrast"
    app = make_app(engine=engine, theme="light")  # --theme wins
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.theme == "light"


async def test_unknown_theme_and_bad_theme_file_are_reported_not_fatal(engine, config_dir):
    (config_dir / "themes").mkdir(parents=True)
    (config_dir / "themes" / "broken.toml").write_text("name = 'broken'\nprimary = 'not-a-colour'\n")
    (config_dir / "themes" / "mine.toml").write_text("name = 'mine'\nprimary = '#ff8800'\n[heatmap]\nhigh = '#00ff00'\n")
    app = make_app(engine=engine, theme="no-such-theme")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.theme == "dark"
        messages = [m for _, m in notifications(app)]
        assert any("unknown theme 'no-such-theme'" in m for m in messages)
        assert any("broken.toml" in m and "not a colour" in m for m in messages)
        assert "mine" in app.available_themes
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Theme: mine")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "mine", 5, "the palette theme command")


async def test_small_and_large_terminals(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await finished_run(pilot)
        await pilot.pause(0.3)
        for selector in ("#prompt", "#subject", "#strip", "#viewbar", "#status", "#plot"):
            region = app.query_one(selector).region
            assert region.width > 0 and region.height > 0 and region.bottom <= 23, selector
        footer = app.query_one(Footer)
        assert footer.region.y == 23 and len(footer.children) >= 5
        plot = app.query_one(GridPlot)
        assert plot.size.width >= 60 and "hidden" in str(plot.render())
        await pilot.resize_terminal(200, 60)
        await pilot.pause(0.3)
        assert app.query_one(GridPlot).size.height >= 30
        await pilot.press("ctrl+o")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)
        assert app.is_running


async def test_help_screen_and_command_palette(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        app.query_one(TokenStrip).focus()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        provider = TracerCommands(app.screen)
        titles = [hit.text async for hit in provider.discover()]
        assert {"Run trace", "Cancel run", "Export grid", "Toggle view", "Help"} <= set(titles)
        assert "Theme: high-contrast" in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"toggle view")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.trace_screen.view_mode == "positions", 5, "the palette's toggle view")
