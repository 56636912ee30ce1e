"""A cursor on the grid (issue 24.1): arrow keys and the mouse move it, a readout line names the
cell (token, layer, kind, value, 95% interval, samples), F9 gives the top-5 at the cursor, and F9
is in the footer, the help and the command palette. On the fake engine."""

from __future__ import annotations

from tracer.render.terminal_plot import _bins

from fake_engine import FakeEngine
from tui_helpers import notifications, ready, run_and_wait, wait_for

from tui.app import make_app
from tui.commands import COMMANDS
from tui.gridmodel import cell_readout
from tui.screens.help import HELP


async def test_arrow_keys_move_the_cursor_and_the_readout_names_the_cell():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        plot = ts.pane.plot
        assert "click the grid" in str(ts.pane.readout.render())
        plot.focus()
        await pilot.press("down", "down", "right", "right", "right")
        await pilot.pause()
        assert ts.cursor == (2, 3) and plot.cursor == (2, 3)
        grid, result = ts.finished["all"]
        text = str(ts.pane.readout.render())
        value = result.grids["hidden"]["recovery"][2][3]
        low, high = result.grids["hidden"]["prob_low"][2][3], result.grids["hidden"]["prob_high"][2][3]
        assert text.startswith(f"{result.tokens[2]!r} (token 2) · layer 3 · hidden · {value:.0f}% recovery")
        assert f"P 95%: {low:.4f}..{high:.4f}" in text and f"{result.request.samples} samples" in text
        assert ts.table.cursor_coordinate == (2, 4)  # the table follows
        await pilot.press("up", "up", "up", "left", "left", "left", "left")  # stops at the edges
        assert ts.cursor == (0, 0)


async def test_a_click_puts_the_cursor_on_the_cell_under_the_mouse():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        plot = ts.pane.plot
        view = ts.pane.current
        n_rows, n_cols = len(view.values), len(view.values[0])
        width, height = next(iter(plot.canvas_cache.values()))
        x0, _ = plot.origin
        row, col = 4, 7
        bx = sum(_bins(col, n_cols, width)) // 2
        b = sum(_bins(row, n_rows, height)) // 2  # from the top of the drawing area
        y = plot.size.height - 1 - (height - 1 - b + plot.origin[1])
        await pilot.click(plot, offset=(x0 + bx, y))
        await pilot.pause()
        assert ts.cursor == (row, col)
        grid, _ = ts.finished["all"]
        assert str(ts.pane.readout.render()).startswith(cell_readout(grid, view, row, col))


async def test_f9_gives_the_top5_at_the_cursor_and_is_in_footer_help_and_palette():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        await pilot.press("f9")
        assert any("put the cursor on a cell first" in m for _, m in notifications(app))
        ts.pane.plot.focus()
        await pilot.press("down", "right")
        await pilot.press("f9")
        await wait_for(pilot, lambda: any("top-5 restoring hidden layer 1 at" in m for _, m in notifications(app)),
                       what="the inspected cell")
        assert any(b.key == "f9" and b.show for b in ts.BINDINGS)
        assert "F9" in HELP and any(action == "inspect" for _, _, action in COMMANDS)


async def test_at_80_columns_the_footer_shows_f1_help_and_f9_whole():
    from textual.widgets._footer import FooterKey

    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        keys = {k.key: k for k in app.screen.query(FooterKey)}
        for key in ("f1", "f9"):
            region = keys[key].region
            assert region.width > 0 and region.right <= 80 - len("^p palette"), key
