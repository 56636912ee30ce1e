"""SVG written by hand: escaping, number formatting, colour maps and the heatmap/line-plot drawing.

No matplotlib here. Every figure is a plain string, the same for the same input (no ids drawn
at random, no dates, fixed number formatting), so it can be compared byte for byte.

Colour maps are matplotlib's ColorBrewer sequential maps (ROME's Purples for hidden states,
Greens for MLP, Reds for attention), given by their nine anchor colours; a value at position
t in [0, 1] of the scale gets the colour interpolated linearly between the two nearest anchors
(anchor i sits at t = i/8), each channel rounded to the nearest integer. This is how matplotlib
builds these maps; matplotlib then quantizes them to 256 levels, so its colours can differ from
these by one or two units per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# ColorBrewer 9-class sequential anchors (matplotlib's _cm.py), light to dark.
CMAPS = {
    "Purples": ("#fcfbfd", "#efedf5", "#dadaeb", "#bcbddc", "#9e9ac8", "#807dba", "#6a51a3", "#54278f", "#3f007d"),
    "Greens": ("#f7fcf5", "#e5f5e0", "#c7e9c0", "#a1d99b", "#74c476", "#41ab5d", "#238b45", "#006d2c", "#00441b"),
    "Reds": ("#fff5f0", "#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15", "#67000d"),
}
# matplotlib's tab10, in the order ROME's line plot uses for its six token groups: [0, 1, 2, 4, 5, 3]
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MISSING = "#d9d9d9"  # a cell without a value: this grey, hatched
FONT = "Times New Roman, Times, STIXGeneral, DejaVu Serif, serif"
H_IL = "h\u1d62\u207d\u02e1\u207e"  # h_i^(l) in Unicode: the hidden state in ROME's AIE heatmap title
CHAR_W = 0.6  # a character's width, as a fraction of the font size (for margins only)
TITLE_W = 0.5  # the same for a title (mostly lower-case letters)


def xml_text(text: str) -> str:
    """`text` safe inside an XML element or a double-quoted attribute: & < > " escaped, and the
    characters XML 1.0 cannot hold (controls other than tab/newline, lone surrogates, U+FFFE/FFFF)
    replaced by U+FFFD."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"':
            out.append("&quot;")
        elif (code < 0x20 and ch not in "\t\n") or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def num(x: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros ("12", "12.5", "-0.25")."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def position(value: float, vmin: float, vmax: float) -> float:
    """Where `value` lies on the scale [vmin, vmax], clipped to [0, 1]; 0 when vmax <= vmin
    (a flat scale draws every cell at its floor, as matplotlib's Normalize does)."""
    if not vmax > vmin:
        return 0.0
    return min(1.0, max(0.0, (value - vmin) / (vmax - vmin)))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def colour(cmap: str, t: float) -> str:
    """The colour at position t in [0, 1] of `cmap` (see the module docstring), as "#rrggbb"."""
    anchors = CMAPS[cmap]
    x = min(1.0, max(0.0, t)) * (len(anchors) - 1)
    i = min(int(x), len(anchors) - 2)
    f = x - i
    lo, hi = _rgb(anchors[i]), _rgb(anchors[i + 1])
    return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(lo, hi))


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values inside [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten, the
    smallest that gives at most `target` + 1 ticks."""
    if not (finite(lo) and finite(hi)) or hi <= lo:
        return [lo] if finite(lo) else []
    raw = (hi - lo) / max(1, target)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    ticks = []
    k = math.ceil(lo / step - 1e-9)
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def tick_labels(ticks: list[float], suffix: str = "") -> list[str]:
    """The ticks as text, all with the fewest decimals that show each one exactly ("0", "0.25", "0.5")."""
    for digits in range(7):
        texts = [f"{t:.{digits}f}" for t in ticks]
        if all(abs(float(x) - t) <= 1e-9 * max(1.0, abs(t)) for x, t in zip(texts, ticks)):
            break
    else:  # tiny values: significant digits instead
        texts = [f"{t:.3g}" for t in ticks]
    return [("0" if float(x) == 0 else x) + suffix for x in texts]


def layer_ticks(n_layers: int) -> list[int]:
    """Layers with a tick label: every 5th (ROME's step), every one for 10 layers or fewer."""
    return list(range(0, n_layers, 1 if n_layers <= 10 else 5))


class Svg:
    """An SVG document built element by element."""

    def __init__(self, width: float, height: float, title: str):
        self.width, self.height = width, height
        self.parts = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            (f'<svg xmlns="http://www.w3.org/2000/svg" width="{num(width)}" height="{num(height)}" '
             f'viewBox="0 0 {num(width)} {num(height)}" font-family="{FONT}">'),
            f"<title>{xml_text(title)}</title>",
            '<rect class="background" x="0" y="0" width="100%" height="100%" fill="#ffffff"/>',
        ]

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(self, x: float, y: float, text: str, *, size: float = 12, anchor: str = "start",
             cls: str | None = None, rotate: bool = False, weight: str | None = None) -> None:
        attrs = f'x="{num(x)}" y="{num(y)}" font-size="{num(size)}"'
        if anchor != "start":
            attrs += f' text-anchor="{anchor}"'
        if cls:
            attrs += f' class="{cls}"'
        if weight:
            attrs += f' font-weight="{weight}"'
        if rotate:
            attrs += f' transform="rotate(-90 {num(x)} {num(y)})"'
        self.parts.append(f'<text {attrs} xml:space="preserve">{xml_text(text)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#000000", width: float = 1) -> None:
        self.parts.append(f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" '
                          f'stroke="{stroke}" stroke-width="{num(width)}"/>')

    def finish(self) -> str:
        return "\n".join(self.parts + ["</svg>"]) + "\n"


def hatch_pattern(pattern_id: str) -> str:
    """The grey hatch that fills cells without a value."""
    return (f'<defs><pattern id="{pattern_id}" patternUnits="userSpaceOnUse" width="6" height="6">'
            f'<rect x="0" y="0" width="6" height="6" fill="{MISSING}"/>'
            '<path d="M0 6L6 0M-1 1L1 -1M5 7L7 5" stroke="#9a9a9a" stroke-width="1"/></pattern></defs>')


@dataclass
class HeatmapSpec:
    """Everything a heatmap shows, drawn alike by SVG (heatmap_svg) and matplotlib (figures.mpl).

    values: rows x columns, None/NaN where a cell has no value; row_labels: one per row;
    vmin/vmax: the colour scale's ends (values beyond are drawn at the end colour);
    cmap: a CMAPS name; xticks: the columns labelled with their index; cbar_label: the colour
    bar's caption; cbar_ticks: values marked on the colour bar; name: identifies the figure.
    """

    values: list[list[float | None]]
    row_labels: list[str]
    title: str
    xlabel: str
    cbar_label: str
    vmin: float
    vmax: float
    cmap: str
    name: str
    xticks: list[int] = field(default_factory=list)
    cell_unit: str = ""  # appended to a cell's value in its tooltip ("%")
    cell_format: str = "{:.4g}"
    notes: list[list[str]] | None = None  # per cell, appended to its tooltip (a noise trace's interval)
    caption: list[str] = field(default_factory=list)  # lines printed under the figure (the trace's warnings)


def heatmap_svg(spec: HeatmapSpec) -> str:
    """The SVG of a heatmap: rows down (labels on the left), columns across, a colour bar on the right.

    Each cell is one <rect class="cell"> with its fill from `colour(spec.cmap, position(v, vmin, vmax))`
    and a <title> tooltip ("label, layer l: value"); a cell without a value is filled with the grey hatch.
    """
    rows, cols = len(spec.values), len(spec.values[0]) if spec.values else 0
    font = 11
    cw = max(8.0, min(24.0, 560.0 / max(1, cols)))
    ch = 16.0
    label_w = CHAR_W * font * max([len(x) for x in spec.row_labels] + [4]) + 12
    left, top = label_w + 20, 44.0
    grid_w, grid_h = cw * cols, ch * rows
    bar_x, bar_w, bar_h = left + grid_w + 24, 12.0, max(grid_h, 80.0)
    half_xlabel = CHAR_W * (font + 1) * len(spec.xlabel) / 2
    xlabel_x = max(left + grid_w / 2, half_xlabel + 8)  # centred under the grid, unless it would be cut
    width = max(bar_x + bar_w + 70, TITLE_W * 14 * len(spec.title) + 20, xlabel_x + half_xlabel + 8)
    height = top + max(grid_h + 44, bar_h + 24) + 8
    caption = caption_lines(spec.caption, max(40, int((width - 16) / (CHAR_W * 10))))
    caption_top = height
    height += 13 * len(caption) + (6 if caption else 0)
    pattern = f"missing-{spec.name}"
    svg = Svg(width, height, spec.title)
    svg.add(hatch_pattern(pattern))
    svg.text(width / 2, 22, spec.title, size=14, anchor="middle", cls="title")
    svg.add('<g class="cells" stroke="none">')
    for r, row in enumerate(spec.values):
        for c, v in enumerate(row):
            x, y = left + c * cw, top + r * ch
            if finite(v):
                fill = colour(spec.cmap, position(float(v), spec.vmin, spec.vmax))
                shown = spec.cell_format.format(float(v)) + spec.cell_unit + (spec.notes[r][c] if spec.notes else "")
            else:
                fill, shown = f"url(#{pattern})", "no value"
            svg.add(f'<rect class="cell" x="{num(x)}" y="{num(y)}" width="{num(cw)}" height="{num(ch)}" '
                    f'fill="{fill}"><title>{xml_text(spec.row_labels[r])}, layer {c}: {xml_text(shown)}</title></rect>')
    svg.add("</g>")
    svg.add(f'<rect class="frame" x="{num(left)}" y="{num(top)}" width="{num(grid_w)}" height="{num(grid_h)}" '
            'fill="none" stroke="#000000" stroke-width="0.8"/>')
    for r, label in enumerate(spec.row_labels):
        svg.text(left - 6, top + r * ch + ch / 2 + font * 0.35, label, size=font, anchor="end", cls="row-label")
    for c in spec.xticks:
        x = left + (c + 0.5) * cw
        svg.line(x, top + grid_h, x, top + grid_h + 4)
        svg.text(x, top + grid_h + 16, str(c), size=font, anchor="middle", cls="xtick")
    svg.text(xlabel_x, top + grid_h + 36, spec.xlabel, size=font + 1, anchor="middle", cls="xlabel")
    _colour_bar(svg, spec, bar_x, top, bar_w, bar_h, font)
    for i, line in enumerate(caption):
        svg.text(8, caption_top + 10 + 13 * i, line, size=10, cls="caption")
    return svg.finish()


def caption_lines(caption: list[str], width: int) -> list[str]:
    """A figure's caption lines wrapped at `width` characters (continuations indented)."""
    import textwrap

    return [w for line in caption for w in textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False)]


def _colour_bar(svg: Svg, spec: HeatmapSpec, x: float, y: float, w: float, h: float, font: float) -> None:
    grad = f"scale-{spec.name}"
    anchors = CMAPS[spec.cmap]
    stops = "".join(f'<stop offset="{num(100 * i / (len(anchors) - 1))}%" stop-color="{a}"/>'
                    for i, a in enumerate(anchors))
    svg.add(f'<defs><linearGradient id="{grad}" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>')
    svg.add(f'<rect class="colour-bar" x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}" '
            f'fill="url(#{grad})" stroke="#000000" stroke-width="0.8"/>')
    lo, hi = spec.vmin, spec.vmax
    ticks = [lo] if not hi > lo else [t for t in nice_ticks(lo, hi) if lo - 1e-12 <= t <= hi + 1e-12]
    for t, label in zip(ticks, tick_labels(ticks)):
        ty = y + h - position(t, lo, hi) * h if hi > lo else y + h
        svg.line(x + w, ty, x + w + 3, ty)
        svg.text(x + w + 5, ty + font * 0.35, label, size=font - 1, cls="cbar-tick")
    svg.text(x + w / 2, y + h + 16, spec.cbar_label, size=font, anchor="middle", cls="cbar-label")


@dataclass
class Series:
    """One line of a line plot, with its band (None where it has none)."""

    label: str
    colour: str
    values: list[float]
    low: list[float] | None = None
    high: list[float] | None = None


@dataclass
class LinePlotSpec:
    """A line plot over layers: several series with optional bands, and its axis range."""

    series: list[Series]
    title: str
    xlabel: str
    ylabel: str
    ylim: tuple[float, float]
    n_layers: int
    name: str


def _segments(xs: list[float], ys: list[float]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive finite points (a NaN breaks the line)."""
    runs, run = [], []
    for x, y in zip(xs, ys):
        if finite(y):
            run.append((x, y))
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return runs


def line_plot_svg(spec: LinePlotSpec) -> str:
    """The SVG of a line plot: axes, y grid, bands (<polygon class="band">), lines (<polyline
    class="curve">, one per finite run) and a legend."""
    font = 11
    left, top, pw, ph = 64.0, 40.0, 460.0, 260.0
    legend_w = CHAR_W * font * max([len(s.label) for s in spec.series] + [8]) + 34
    width = left + pw + 16 + legend_w
    height = top + ph + 56
    lo, hi = spec.ylim
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    L = max(1, spec.n_layers - 1)

    def px(layer: float) -> float:
        return left + pw * layer / L

    def py(v: float) -> float:
        return top + ph - ph * (min(hi, max(lo, v)) - lo) / (hi - lo)

    svg = Svg(width, height, spec.title)
    svg.text(left + pw / 2, 22, spec.title, size=14, anchor="middle", cls="title")
    ticks = nice_ticks(lo, hi)
    for t, label in zip(ticks, tick_labels(ticks)):
        y = py(t)
        svg.line(left, y, left + pw, y, stroke="#e6e6e6")
        svg.text(left - 6, y + font * 0.35, label, size=font, anchor="end", cls="ytick")
    if lo < 0 < hi:
        svg.line(left, py(0), left + pw, py(0), stroke="#8c8c8c", width=0.8)
    for layer in layer_ticks(spec.n_layers):
        svg.line(px(layer), top + ph, px(layer), top + ph + 4)
        svg.text(px(layer), top + ph + 16, str(layer), size=font, anchor="middle", cls="xtick")
    layers = list(range(spec.n_layers))
    for s in spec.series:
        if s.low is None or s.high is None:
            continue
        for run_lo, run_hi in zip(_segments(layers, s.low), _segments(layers, s.high)):
            points = [(px(x), py(y)) for x, y in run_lo] + [(px(x), py(y)) for x, y in reversed(run_hi)]
            svg.add(f'<polygon class="band" data-series="{xml_text(s.label)}" fill="{s.colour}" fill-opacity="0.3" '
                    f'stroke="none" points="{" ".join(f"{num(a)},{num(b)}" for a, b in points)}"/>')
    for s in spec.series:
        for run in _segments(layers, s.values):
            points = " ".join(f"{num(px(x))},{num(py(y))}" for x, y in run)
            svg.add(f'<polyline class="curve" data-series="{xml_text(s.label)}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="1.5" points="{points}"/>')
    svg.add(f'<rect class="frame" x="{num(left)}" y="{num(top)}" width="{num(pw)}" height="{num(ph)}" '
            'fill="none" stroke="#000000" stroke-width="0.8"/>')
    svg.text(left + pw / 2, top + ph + 36, spec.xlabel, size=font + 1, anchor="middle", cls="xlabel")
    svg.text(16, top + ph / 2, spec.ylabel, size=font + 1, anchor="middle", cls="ylabel", rotate=True)
    lx = left + pw + 16
    for i, s in enumerate(spec.series):
        y = top + 8 + i * 18
        svg.line(lx, y, lx + 20, y, stroke=s.colour, width=2)
        svg.text(lx + 26, y + font * 0.35, s.label, size=font, cls="legend")
    return svg.finish()
