"""Every private plotext / textual-plotext call the app makes, fenced in one module.

pyproject pins textual-plotext and plotext to the versions these calls were written and tested
against; a version bump checks this module (and tests/tui/test_terminal_plot_and_themes.py) first.
The widgets call `prepare(widget, plt)`, `mark_cells(...)`, `mark_cursor(...)`, `canvas_origin(plt)`
and `build(plt)` only.
"""

from __future__ import annotations

from tracer.render.terminal_plot import _bins  # draw_grid's canvas bins per cell (tracer/render/terminal_plot.py)

from rich.text import Text


def prepare(widget, plt) -> None:
    """Size the widget's own plotext figure to the widget and give it the app's theme, as
    PlotextPlot.render does (textual-plotext issue #5: plotsize alone leaves a stale size)."""
    width, height = widget.size.width, widget.size.height
    plt.plotsize(width, height)
    plt._set_size(width, height)
    plt.theme(widget._get_plotext_theme_name(widget.app.theme))


def mark_cells(plt, marks, n_rows: int, n_cols: int, canvas: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """Overdraw the cells in `marks` ((row, column) pairs, row 0 on top) with a light shade, after
    tracer.render.terminal_plot.draw_grid drew the grid into `plt` on a canvas of `canvas` = (columns, rows) bins
    (the value draw_grid left in its canvas_cache)."""
    width, height = canvas
    if not marks or not n_rows or not n_cols or n_rows > height or n_cols > width:
        return  # cells sharing canvas rows: a mark would cover its neighbours' colour
    for r, c in marks:
        y0, y1 = _bins(r, n_rows, height)
        y0, y1 = height - 1 - y1, height - 1 - y0
        x0, x1 = _bins(c, n_cols, width)
        plt.rectangle([x0, x1], [y0, y1], marker="░", color=colour, fill=True)


def mark_cursor(plt, cursor, n_rows: int, n_cols: int, canvas: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """A ◆ at the middle of the cursor's cell ((row, column), row 0 on top), drawn last."""
    width, height = canvas
    if cursor is None or not n_rows or not n_cols:
        return
    r, c = cursor
    if not (0 <= r < n_rows and 0 <= c < n_cols):
        return
    b0, b1 = _bins(r, n_rows, height)
    x0, x1 = _bins(c, n_cols, width)
    plt.scatter([(x0 + x1) // 2], [height - 1 - (b0 + b1) // 2], marker="◆", color=colour)


def canvas_origin(plt) -> tuple[int, int] | None:
    """(first column, first row from the bottom) of the built figure's drawing area, in the
    figure's characters; None before a build."""
    matrix = getattr(getattr(plt, "monitor", None), "matrix", None)
    cols, rows = getattr(matrix, "Cols_canvas", None), getattr(matrix, "Rows_canvas", None)
    if not cols or not rows:
        return None
    return int(cols[0]), int(rows[0])


def cell_at(x: int, y: int, *, figure_height: int, origin: tuple[int, int], canvas: tuple[int, int],
            n_rows: int, n_cols: int) -> tuple[int, int] | None:
    """The (row, column) of the grid cell under the figure character (x, y) (y from the top), or
    None outside the drawing area; the inverse of draw_grid's placement."""
    width, height = canvas
    bx, by = x - origin[0], (figure_height - 1 - y) - origin[1]
    if not (0 <= bx < width and 0 <= by < height) or not n_rows or not n_cols:
        return None
    b = height - 1 - by  # bins counted from the top
    row = next((r for r in range(n_rows) if _bins(r, n_rows, height)[0] <= b <= _bins(r, n_rows, height)[1]), None)
    col = next((c for c in range(n_cols) if _bins(c, n_cols, width)[0] <= bx <= _bins(c, n_cols, width)[1]), None)
    return None if row is None or col is None else (row, col)


def thin_row_ticks(plt, labels, n_rows: int, canvas: tuple[int, int]) -> None:
    """When the canvas has fewer rows than the grid, label every k-th row (and the last, the
    prediction's token) instead of all of them: colliding tick labels are drawn in an order plotext
    does not fix, so the label a row showed changed between runs."""
    height = canvas[1]
    if n_rows <= height or not n_rows:
        return
    step = -(-n_rows // max(1, height))
    rows = list(range(0, n_rows, step))
    if rows[-1] != n_rows - 1:
        rows = [r for r in rows if n_rows - 1 - r >= step] + [n_rows - 1]
    ys = [height - 1 - sum(_bins(r, n_rows, height)) // 2 for r in rows]
    plt.yticks(ys, [labels[r] for r in rows])


TOO_SMALL = "(too small to draw)"


def build(plt) -> Text:
    """The figure as Rich text. plotext divides by the canvas's extent, which is zero when the
    widget leaves it a single row or column (a 60x15 terminal): then a note instead of a crash."""
    try:
        return Text.from_ansi(plt.build())
    except (ZeroDivisionError, ValueError, IndexError):
        return Text(TOO_SMALL, style="italic", justify="center")


def drawing(draw) -> Text | None:
    """Run `draw()` (the widget's plotext calls); None, for the same small-canvas failures as
    `build`, when it cannot be drawn."""
    try:
        draw()
    except (ZeroDivisionError, ValueError, IndexError):
        return None
    return Text("")
