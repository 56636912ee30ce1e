"""Everything the app writes to disk, in one place.

The trace screen's grid: a text file (plotext drawing without colour + the numbers), CSV and JSON of
the whole result (tracer.render.export), an SVG of the grid and, with matplotlib, a PDF heatmap in ROME's
style (tracer.render.figures). The sweep screen's report: text, CSV and JSON as `tracer-tui sweep-report`
renders them (tracer.render.sweep_report), and the report's plots."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tracer.errors import user_message
from tracer.render import export, figures, trace_text
from tracer.render.sweep_report import render
from tracer.render.sweep_report import render_text as render_report_text
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
    """The current view drawn without colour codes (shade characters; ░, the screen's
    "indistinguishable" texture, is drawn as ·), the view's cells as on screen (value±half-width,
    ~ where the interval holds p_corrupted), then the labelled number tables; the trace's warnings first
    (the ones that void its reading first)."""
    width = max(width, 24 + 3 * max((len(r) for r in view.values), default=0))
    drawing = render_text(view.values, view.labels, title=view.title, metric=view.metric, width=min(width, 200))
    drawing = drawing.replace("░", "·") + "\nshades, low to high: · ▒ ▓ █\n"
    label_width = max((len(label) for label in view.labels), default=0)
    rows = ["  ".join([f"{label:<{label_width}}"] + [view.cell_text(r, c) for c in range(len(view.values[r]))])
            for r, label in enumerate(view.labels)]
    header = f"{view.title}, as on screen (columns: layers 0-{max(len(r) for r in view.values) - 1}"
    header += "; ±: half-width of the 95% interval; ~: indistinguishable from the corrupted run)" if view.spread else ")"
    lead = "\n".join(warning_block(result))
    return ((lead + "\n" if lead else "") + drawing + "\n" + "\n".join([header, *rows]) + "\n\n"
            + trace_text.to_text(result, view.metric, warnings_first=False))


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


def fact_slug(result) -> str:
    """The fact a trace holds, for file names: its subject in lower case, letters and digits
    joined by "-" (at most 40 characters), "fact" when nothing is left."""
    text = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in result.request.subject.lower())
    return "-".join(part for part in text.split("-") if part)[:40].strip("-") or "fact"


def export_all(result, view, folder: str | Path, kind: str, metric: str, stamp: str | None = None) -> ExportOutcome:
    """Text, CSV, JSON (always), SVG and PDF (when available), named after the result's own fact
    (trace-<subject>-<time>: never the form's, which may have changed since). Never raises for a
    bad folder: the outcome's `error` says what went wrong and nothing on screen is lost."""
    stamp = f"{fact_slug(result)}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"
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


def write_report(report, folder: str, stamp: str | None = None) -> tuple[list[str], list[str], str | None]:
    """(paths written, notes on what was left out, error or None). Never raises for a bad folder."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    try:
        out = Path(folder).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        base, n = out / f"sweep-{stamp}", 1
        while any(base.with_suffix(s).exists() for s in (".txt", ".csv", ".json")):
            n += 1
            base = out / f"sweep-{stamp}-{n}"
        paths = []
        for suffix, text in ((".txt", render_report_text(report, plots=True, color=False)),
                             (".csv", render(report, "csv")), (".json", render(report, "json"))):
            path = base.with_suffix(suffix)
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
    except OSError as exc:
        return [], [], f"{exc.strerror or exc}: {getattr(exc, 'filename', None) or folder}"
    notes = []
    try:
        plots = Path(str(base) + "-plots")
        paths += [str(p) for p in figures.save_report_plots(report, str(plots))]
    except ImportError:
        notes.append("report plots left out: install the matplotlib extra")
    except Exception as exc:  # another helper's module: its failure must not lose the tables
        notes.append(f"report plots left out: {user_message(exc)}")
    return paths, notes, None
