"""The paper's Figure 3 (docs/method.md#d74-the-severed-path-columns): the severed-path column chart,
three columns per layer (the ordinary AIE of one hidden state at the last subject token, with attention severed,
with MLP severed), as SVG by hand; figures.mpl draws the same spec with matplotlib."""

from __future__ import annotations

from dataclasses import dataclass

from .svg import CHAR_W, Svg, finite, layer_ticks, nice_ticks, num, tick_labels, xml_text

SEVERED_STYLE = {  # ROME's order, colours and labels
    "hidden": ("#7261ab", "Effect of single state on P"),
    "hidden-severed-attn": ("#f3201b", "Effect with Attn severed"),
    "hidden-severed-mlp": ("#20b020", "Effect with MLP severed"),
}
OFFSETS = {1: (0.0,), 2: (-0.15, 0.15), 3: (-0.3, 0.0, 0.3)}  # ROME: -0.3, 0, +0.3, width 0.3


@dataclass
class BarChartSpec:
    """Columns per layer: (label, colour, values) per series; values are fractions, shown as %."""

    series: list[tuple[str, str, list[float]]]
    title: str
    xlabel: str
    ylabel: str
    n_layers: int
    name: str


def severed_spec(report) -> BarChartSpec | None:
    """The severed-path chart of a report (None without a severed series)."""
    paths = report.severed_paths
    if not paths or not report.kept:
        return None
    series = [(SEVERED_STYLE[k][1], SEVERED_STYLE[k][0], [float(v) for v in paths[k]])
              for k in SEVERED_STYLE if k in paths]
    return BarChartSpec(
        series=series, title="Causal effect of states at the early site with Attn or MLP modules severed",
        xlabel="Layer at which the single hidden state is restored", ylabel="Average Indirect Effect",
        n_layers=report.n_layers, name="severed-paths",
    )


def y_range(spec: BarChartSpec) -> tuple[float, float]:
    values = [0.0] + [v for _, _, vs in spec.series for v in vs if finite(v)]
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo) if hi > lo else 0.01
    return (lo - pad if lo < 0 else 0.0), hi + pad


def bar_chart_svg(spec: BarChartSpec) -> str:
    """The SVG: one <rect class="bar"> per finite value (data-series names its series), a % y axis, a legend."""
    font = 11
    left, top, pw, ph = 64.0, 40.0, max(300.0, 14.0 * spec.n_layers), 240.0
    legend_w = CHAR_W * font * max([len(label) for label, _, _ in spec.series] + [8]) + 34
    width, height = left + pw + 16 + legend_w, top + ph + 56
    lo, hi = y_range(spec)
    offsets = OFFSETS.get(len(spec.series), OFFSETS[3])
    slot = pw / max(1, spec.n_layers)

    def py(v: float) -> float:
        return top + ph - ph * (v - lo) / (hi - lo)

    svg = Svg(width, height, spec.title)
    svg.text(width / 2, 22, spec.title, size=14, anchor="middle", cls="title")
    ticks = nice_ticks(lo, hi)
    for t, label in zip(ticks, tick_labels([100 * t for t in ticks], "%")):
        svg.line(left, py(t), left + pw, py(t), stroke="#e6e6e6")
        svg.text(left - 6, py(t) + font * 0.35, label, size=font, anchor="end", cls="ytick")
    for i, (label, colour, values) in enumerate(spec.series):
        for layer, v in enumerate(values):
            if not finite(v):
                continue
            x = left + slot * (layer + 0.5 + offsets[min(i, len(offsets) - 1)] - 0.15)
            y0, y1 = sorted((py(0.0), py(v)))
            svg.add(f'<rect class="bar" data-series="{xml_text(label)}" x="{num(x)}" y="{num(y0)}" '
                    f'width="{num(slot * 0.3)}" height="{num(y1 - y0)}" fill="{colour}"/>')
    svg.line(left, py(0.0), left + pw, py(0.0), stroke="#000000", width=0.8)
    for layer in layer_ticks(spec.n_layers):
        x = left + slot * (layer + 0.5)
        svg.line(x, top + ph, x, top + ph + 4)
        svg.text(x, top + ph + 16, str(layer), size=font, anchor="middle", cls="xtick")
    svg.add(f'<rect class="frame" x="{num(left)}" y="{num(top)}" width="{num(pw)}" height="{num(ph)}" '
            'fill="none" stroke="#000000" stroke-width="0.8"/>')
    svg.text(left + pw / 2, top + ph + 36, spec.xlabel, size=font + 1, anchor="middle", cls="xlabel")
    svg.text(16, top + ph / 2, spec.ylabel, size=font + 1, anchor="middle", cls="ylabel", rotate=True)
    for i, (label, colour, _) in enumerate(spec.series):
        y = top + 8 + i * 18
        svg.add(f'<rect x="{num(left + pw + 16)}" y="{num(y - 5)}" width="10" height="10" fill="{colour}"/>')
        svg.text(left + pw + 32, y + font * 0.35, label, size=font, cls="legend")
    return svg.finish()
