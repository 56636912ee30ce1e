"""PDF/PNG figures through matplotlib (the optional extra `plots`), drawn from the same specs as
the SVGs. matplotlib is imported inside the functions, with the Agg backend (never a GUI);
without it, a clear InputError says how to install it."""

from __future__ import annotations

import importlib.util
import math

from ...errors import InputError
from .svg import H_IL, HeatmapSpec, LinePlotSpec, caption_lines, layer_ticks

FORMATS = ("svg", "pdf", "png")
MISSING_MESSAGE = "install tracer-tui[plots] (matplotlib) for PDF/PNG"
SERIF = ("Times New Roman", "Times", "Nimbus Roman", "Liberation Serif", "STIXGeneral", "DejaVu Serif")
DPI = 200  # ROME's


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the `plots` extra is installed)."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or an InputError naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise InputError(MISSING_MESSAGE) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _rc() -> dict:
    """ROME's Times New Roman where installed, else the nearest serif; DejaVu Sans last for the
    glyphs a serif lacks (␣, ⏎). Only installed families are named, so matplotlib logs nothing."""
    from matplotlib import font_manager

    present = {f.name for f in font_manager.fontManager.ttflist}
    families = [f for f in SERIF if f in present] + ["DejaVu Sans"]
    return {"font.family": families, "svg.hashsalt": "tracer-tui", "pdf.compression": 6,
            "savefig.bbox": "tight", "axes.unicode_minus": False}


def _plain(text: str) -> str:
    """`text` as matplotlib shows it literally: a '$' (a token "$", "$5") would start mathtext;
    the report heatmap's h_i^(l) becomes ROME's mathtext."""
    return str(text).replace("$", "\\$").replace(H_IL, "$h_i^{(l)}$")


def _save(fig, path: str, plt) -> None:
    import warnings

    try:
        with warnings.catch_warnings():  # a token's rare character (␛) no font has: drawn as a box, silently
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            fig.savefig(path, dpi=DPI, metadata={"CreationDate": None} if path.lower().endswith(".pdf") else None)
    except OSError as exc:
        raise InputError(f"cannot write figure {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def save_heatmap_spec(spec: HeatmapSpec, path: str, size: tuple[float, float]) -> str:
    """Draw a HeatmapSpec with pcolor in ROME's style and save it (format from the suffix)."""
    plt = _pyplot()
    import numpy as np
    from matplotlib import colormaps

    values = np.ma.masked_invalid(np.array([[math.nan if v is None else v for v in row] for row in spec.values],
                                           dtype=np.float64).reshape(len(spec.values), -1))
    cmap = colormaps[spec.cmap]
    with plt.rc_context(_rc()):
        fig, ax = plt.subplots(figsize=size, dpi=DPI)
        # a flat scale (every cell at or below the floor) draws every cell at the floor colour
        vmax = spec.vmax if spec.vmax > spec.vmin else spec.vmin + max(1e-6, abs(spec.vmin) * 1e-3)
        h = ax.pcolor(values, cmap=cmap, vmin=spec.vmin, vmax=vmax)
        ax.patch.set_facecolor("#d9d9d9")  # cells without a value: grey, hatched
        ax.patch.set_edgecolor("#9a9a9a")
        ax.patch.set_hatch("///")
        ax.invert_yaxis()
        ax.set_yticks([0.5 + i for i in range(len(spec.row_labels))])
        ax.set_yticklabels([_plain(t) for t in spec.row_labels])
        ax.set_xticks([0.5 + i for i in spec.xticks])
        ax.set_xticklabels([str(i) for i in spec.xticks])
        ax.set_title(_plain(spec.title))
        ax.set_xlabel(_plain(spec.xlabel))
        cb = fig.colorbar(h)
        cb.ax.set_title(_plain(spec.cbar_label), y=-0.16, fontsize=10)
        if spec.caption:  # under the axes; savefig's tight bbox takes it in
            fig.text(0.0, -0.26 / size[1], _plain("\n".join(caption_lines(spec.caption, 90))), fontsize=5,
                     ha="left", va="top", family="DejaVu Sans")
        _save(fig, path, plt)
    return path


def save_line_plot_spec(spec: LinePlotSpec, path: str) -> str:
    """Draw a LinePlotSpec as ROME's AIE line plot (bands with alpha 0.3) and save it."""
    plt = _pyplot()
    import numpy as np

    layers = np.arange(spec.n_layers)
    with plt.rc_context(_rc()):
        fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=DPI)
        for s in spec.series:
            if s.low is not None and s.high is not None:
                ax.fill_between(layers, np.array(s.low, dtype=float), np.array(s.high, dtype=float),
                                alpha=0.3, color=s.colour, linewidth=0)
            ax.plot(layers, np.array(s.values, dtype=float), label=_plain(s.label), color=s.colour)
        ax.set_ylim(*spec.ylim)
        ax.set_xlim(0, max(1, spec.n_layers - 1))
        _finish(ax, spec)
        _save(fig, path, plt)
    return path


def _finish(ax, spec) -> None:
    """The layer ticks, the titles and the legend every line and bar chart has."""
    ax.set_xticks(layer_ticks(spec.n_layers))
    ax.set_title(_plain(spec.title))
    ax.set_xlabel(_plain(spec.xlabel))
    ax.set_ylabel(_plain(spec.ylabel))
    ax.legend(frameon=False, fontsize=7)


def save_bar_chart_spec(spec, path: str) -> str:
    """Draw a BarChartSpec as the paper's Figure 3 (columns at offsets -0.3, 0, +0.3, width 0.3;
    a percent y axis) and save it."""
    plt = _pyplot()
    import numpy as np
    from matplotlib.ticker import PercentFormatter

    from .bars import OFFSETS

    offsets = OFFSETS.get(len(spec.series), OFFSETS[3])
    layers = np.arange(spec.n_layers)
    with plt.rc_context(_rc()):
        fig, ax = plt.subplots(figsize=(max(6.0, 0.2 * spec.n_layers), 3.0), dpi=DPI)
        for i, (label, colour, values) in enumerate(spec.series):
            ax.bar(layers + offsets[min(i, len(offsets) - 1)], np.array(values, dtype=float), width=0.3,
                   color=colour, label=_plain(label))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        _finish(ax, spec)
        _save(fig, path, plt)
    return path
