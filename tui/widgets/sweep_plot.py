"""The sweep screen's plot: six curves (token groups) over layers for one kind."""

from __future__ import annotations

from tracer.sweeps.aggregate import SweepReport
from tracer.sweeps.stats import GROUP_LABELS, GROUPS

from rich.text import Text
from textual_plotext import PlotextPlot

from .. import plotting_internals


class SweepPlot(PlotextPlot):
    """Six curves (token groups) over layers for one kind, in this widget's own plotext figure."""

    DEFAULT_CSS = """
    SweepPlot { height: 1fr; min-height: 12; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.report: SweepReport | None = None
        self.kind: str | None = None
        self.placeholder = "No results yet: open a results file, or run a sweep."

    def show(self, report: SweepReport | None, kind: str | None) -> None:
        self.report, self.kind = report, kind
        self.refresh()

    def render(self):
        width, height = self.size.width, self.size.height
        report, kind = self.report, self.kind
        if report is None or kind is None or not report.kept or report.n_layers < 1:
            return Text(self.placeholder, style="italic", justify="center")
        if width < 20 or height < 6:
            return Text("(too small to draw)", style="italic", justify="center")
        plt = self.plt
        plt.clear_figure()
        plotting_internals.prepare(self, plt)
        layers = list(range(report.n_layers))
        for group in GROUPS:
            curve = report.curves[kind][group]
            if curve.n:
                plt.plot(layers, [0.0 if v != v else v for v in curve.mean], label=GROUP_LABELS[group], marker="braille")
        step = max(1, -(-report.n_layers // 8))
        plt.xticks(sorted(set(range(0, report.n_layers, step)) | {report.n_layers - 1}))
        plt.title(f"{kind}: average indirect effect ({report.aggregate} aggregation) over {report.kept} facts")
        plt.xlabel("layer")
        return plotting_internals.build(plt)
