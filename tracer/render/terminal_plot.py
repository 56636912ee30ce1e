"""Text rendering of a trace grid (rows x layers) with plotext: one filled rectangle per cell.

plotext's own `heatmap` needs a pandas DataFrame and prints it, and `matrix_plot` draws one
character per cell, so grids are drawn as filled rectangles instead. Drawing always goes
into a figure object the caller owns (the TUI passes textual-plotext's `self.plt`;
`render_text` makes a private one), never plotext's global figure.

Without colour, a cell's value is shown by a shade character (' ░▒▓█'), so the text export
reads in any editor. No Textual here: the engine side stays UI-free.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

from plotext._figure import _figure_class as Figure

from ..metrics import METRIC_LABELS, METRICS, with_unit

SHADES = " ░▒▓█"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
Grid = Sequence[Sequence[float | None]]


def finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def value_range(values: Grid) -> tuple[float, float] | None:
    """(min, max) over the finished cells, or None when there are none."""
    cells = [v for row in values for v in row if finite(v)]
    if not cells:
        return None
    return min(cells), max(cells)


def peak(values: Grid) -> tuple[int, int, float] | None:
    """(row, column, value) of the largest finished cell (first one on ties)."""
    best = None
    for r, row in enumerate(values):
        for c, v in enumerate(row):
            if finite(v) and (best is None or v > best[2]):
                best = (r, c, float(v))
    return best


def format_value(value: float | None, metric: str) -> str:
    """A cell as text: recovery in %, probabilities with 3 decimals, logit differences signed."""
    return METRICS[metric].short.format(value) if finite(value) else "·"


def format_with_unit(value: float, metric: str) -> str:
    return with_unit(value, metric)


def scale_position(value: float, lo: float, hi: float) -> float:
    return 1.0 if hi <= lo else (value - lo) / (hi - lo)


def canvas_size(plt) -> tuple[int, int]:
    """(columns, rows) of the figure's drawing area at its current size and labels."""
    plt.build()
    matrix = plt.monitor.matrix
    return max(1, len(matrix.Cols_canvas)), max(1, len(matrix.Rows_canvas))


def _bins(i: int, n: int, size: int) -> tuple[int, int]:
    """Canvas bins [a, b] (inclusive) of cell i of n across `size` bins: cells tile exactly."""
    a, b = round(size * i / n), round(size * (i + 1) / n) - 1
    return a, max(a, b)


def _ticks(n: int, room: int, per_label: int) -> list[int]:
    step = max(1, math.ceil(n / max(1, room // per_label)))
    return list(range(0, n, step))


def draw_grid(
    plt,
    values: Grid,
    row_labels: Sequence[str],
    *,
    title: str = "",
    xlabel: str = "layer",
    colour: Callable[[float], tuple[int, int, int]] | None = None,
    lo: float | None = None,
    hi: float | None = None,
    canvas_cache: dict | None = None,
) -> tuple[float, float] | None:
    """Draw `values` (rows x layers, row 0 on top; None = not done yet) into the plotext
    figure `plt`, whose size must already be set (`plotsize`).

    Coordinates are canvas bins (measured with one empty build), so every cell gets whole
    characters and cells tile without gaps. `colour(t)` maps a cell's place on the scale
    (0 = lo, 1 = hi) to RGB; without it cells are shade characters. Returns the scale (lo, hi).
    `canvas_cache` (a dict the caller keeps) saves the probe when nothing that sizes the
    canvas has changed."""
    n_rows = len(values)
    n_cols = max((len(r) for r in values), default=0)
    yt = list(range(n_rows)) if n_rows <= 60 else _ticks(n_rows, 60, 1)
    key = (tuple(plt._size), title, xlabel, tuple(row_labels[i] for i in yt))
    if canvas_cache is not None and key in canvas_cache:
        width, height = canvas_cache[key]
    else:  # probe: the final labels and an invisible point (without data plotext drops the ticks)
        plt.clear_data()
        plt.scatter([0, 1], [0, 1], marker=" ")
        plt.title(title)
        plt.xlabel(xlabel)
        plt.yticks(list(range(len(yt))), [row_labels[i] for i in yt])
        plt.xticks([0], ["0"])
        width, height = canvas_size(plt)
        if canvas_cache is not None:
            canvas_cache.clear()
            canvas_cache[key] = (width, height)
    plt.clear_data()
    plt.title(title)
    plt.xlabel(xlabel)
    rng = value_range(values)
    if rng is not None:
        lo = rng[0] if lo is None else lo
        hi = rng[1] if hi is None else hi
    for r, row in enumerate(values):
        y0, y1 = _bins(r, n_rows, height)
        y0, y1 = height - 1 - y1, height - 1 - y0  # row 0 on top
        for c, v in enumerate(row):
            if not finite(v):
                continue
            x0, x1 = _bins(c, n_cols, width)
            t = scale_position(v, lo, hi)
            if colour is None:
                marker = SHADES[min(len(SHADES) - 1, int(t * (len(SHADES) - 1) + 0.5))]
                if marker == " ":
                    continue
                plt.rectangle([x0, x1], [y0, y1], marker=marker, color="default", fill=True)
            else:
                plt.rectangle([x0, x1], [y0, y1], marker="█", color=colour(t), fill=True)
    plt.xlim(0, width - 1)
    plt.ylim(0, height - 1)
    xt = _ticks(n_cols, width, 4) if n_cols else []
    plt.xticks([sum(_bins(c, n_cols, width)) // 2 for c in xt], [str(c) for c in xt])
    plt.yticks([height - 1 - sum(_bins(r, n_rows, height)) // 2 for r in yt], [row_labels[i] for i in yt])
    return None if rng is None else (lo, hi)


def row_label(token: str, in_subject: bool = False, limit: int = 12) -> str:
    """A token as a row label: spaces shown as "␣", newlines as "⏎", subject tokens starred."""
    text = visible(token)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text + ("*" if in_subject else "")


def visible(token: str) -> str:
    """A token for the screen: tracer.render.export.show_token (whitespace visible, controls escaped)."""
    from .tokens import show_token

    return show_token(token)


def text_height(n_rows: int) -> int:
    per_row = 2 if n_rows <= 8 else 1
    return n_rows * per_row + 5


def render_text(
    values: Grid,
    row_labels: Sequence[str],
    *,
    title: str = "",
    xlabel: str = "layer",
    metric: str = "recovery",
    width: int = 100,
    height: int | None = None,
) -> str:
    """The grid as plain text (no colour codes): the plotext drawing plus a shade legend."""
    fig = Figure()
    fig._limit_size(False, False)  # plotext caps plots at the terminal's size; a file has none
    fig.theme("clear")
    fig.plotsize(width, height or text_height(len(values)))
    rng = draw_grid(fig, values, row_labels, title=title, xlabel=xlabel, colour=None)
    drawing = ANSI.sub("", fig.build()).rstrip()
    lines = [line.rstrip() for line in drawing.splitlines()]
    if rng is not None:
        lo, hi = rng
        steps = "  ".join(
            f"{SHADES[i] if SHADES[i] != ' ' else '(blank)'} {format_value(lo + (hi - lo) * i / (len(SHADES) - 1), metric)}"
            for i in range(len(SHADES))
        )
        lines.append(f"scale ({METRIC_LABELS.get(metric, metric)}): {steps}")
    return "\n".join(lines) + "\n"
