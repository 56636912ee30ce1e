"""Export the grid on screen: a text file (plotext drawing without colour + the numbers), CSV and
JSON of the whole result (tracer.render.export), an SVG of the grid and, with matplotlib, a PDF heatmap in
ROME's style (tracer.render.figures, when that module is there: otherwise the note says so)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tracer.render import export, trace_text
from tracer.errors import user_message
from tracer.render.terminal_plot import render_text
from tracer.render.trace_text import warning_block


@dataclass
class ExportOutcome:
    """What an export wrote (`paths` by suffix), what it could not write (`notes`), or why it failed."""

    paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def announcement(self) -> str:
        """"exported to /folder/: trace-X.txt, trace-X.csv, …"."""
        if not self.paths:
            return "nothing exported"
        folder = str(Path(next(iter(self.paths.values()))).parent)
        names = ", ".join(Path(p).name for p in self.paths.values())
        return f"exported to {folder}/: {names}"


def export_text(result, view, width: int = 100) -> str:
    """The trace's warnings (the ones that void its reading first), the current view drawn without
    colour codes, then the labelled number tables."""
    width = max(width, 24 + 3 * max((len(r) for r in view.values), default=0))
    drawing = render_text(view.values, view.labels, title=view.title, metric=view.metric, width=min(width, 200))
    lead = "\n".join(warning_block(result))
    return (lead + "\n" if lead else "") + drawing + "\n" + trace_text.to_text(result, view.metric, warnings_first=False)


def free_base(folder: Path, stamp: str, suffixes=(".txt", ".csv", ".json", ".svg", ".pdf")) -> Path:
    """<folder>/trace-<stamp>, with -2, -3, ... when a file of that name exists."""
    base, n = folder / f"trace-{stamp}", 1
    while any(base.with_suffix(s).exists() for s in suffixes):
        n += 1
        base = folder / f"trace-{stamp}-{n}"
    return base


def write_exports(result, view, folder: str | Path, stamp: str) -> dict[str, str]:
    """Write <folder>/trace-<stamp>.{txt,csv,json}; raises OSError when the folder is unusable."""
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    base = free_base(folder, stamp)
    paths = {s: str(base.with_suffix(f".{s}")) for s in ("txt", "csv", "json")}
    Path(paths["txt"]).write_text(export_text(result, view), encoding="utf-8")
    Path(paths["csv"]).write_text(export.to_csv(result), encoding="utf-8")
    Path(paths["json"]).write_text(export.dumps(export.to_json(result), indent=1) + "\n", encoding="utf-8")
    return paths


def write_figures(result, base: Path, kind: str, metric: str) -> tuple[dict[str, str], list[str]]:
    """The SVG of the grid, and the PDF heatmap where matplotlib is installed, beside the text exports;
    (paths, notes on what was left out)."""
    from tracer.render import figures

    paths, notes = {}, []
    kind = kind if kind in result.grids else next(iter(result.grids))
    svg_metric = metric if metric in ("prob", "recovery", "logit_diff") else "prob"
    svg = base.with_suffix(".svg")
    svg.write_text(figures.grid_svg(result, kind, svg_metric), encoding="utf-8")
    paths["svg"] = str(svg)
    try:
        figures.save_heatmap(result, str(base.with_suffix(".pdf")), kind)
        paths["pdf"] = str(base.with_suffix(".pdf"))
    except ImportError:
        notes.append("PDF heatmap left out: install the matplotlib extra")
    except Exception as exc:  # matplotlib missing (InputError) or a bug there: the other files stay
        notes.append(f"PDF heatmap left out: {user_message(exc)}")
    return paths, notes


def export_all(result, view, folder: str | Path, kind: str, metric: str, stamp: str | None = None) -> ExportOutcome:
    """Text, CSV, JSON (always), SVG and PDF (when available). Never raises for a bad folder:
    the outcome's `error` says what went wrong and nothing on screen is lost."""
    import time

    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    try:
        paths = write_exports(result, view, folder, stamp)
    except OSError as exc:
        return ExportOutcome(error=f"{exc.strerror or exc}: {getattr(exc, 'filename', None) or folder}")
    outcome = ExportOutcome(paths)
    try:
        more, outcome.notes = write_figures(result, Path(paths["txt"]).with_suffix(""), kind, metric)
        outcome.paths.update(more)
    except OSError as exc:
        outcome.notes.append(f"figures left out: {exc.strerror or exc}")
    return outcome
