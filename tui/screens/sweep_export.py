"""Writing a sweep's report from the sweep screen: text, CSV and JSON as `tracer-tui sweep-report`
renders them (tracer.render.sweep_report), and the report's plots where tracer.render.figures is there."""

from __future__ import annotations

import time
from pathlib import Path


def write_report(report, folder: str, stamp: str | None = None) -> tuple[list[str], list[str], str | None]:
    """(paths written, notes on what was left out, error or None). Never raises for a bad folder."""
    from tracer.render.sweep_report import render, render_text

    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    try:
        out = Path(folder).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        base, n = out / f"sweep-{stamp}", 1
        while any(base.with_suffix(s).exists() for s in (".txt", ".csv", ".json")):
            n += 1
            base = out / f"sweep-{stamp}-{n}"
        paths = []
        for suffix, text in ((".txt", render_text(report, plots=True, color=False)),
                             (".csv", render(report, "csv")), (".json", render(report, "json"))):
            path = base.with_suffix(suffix)
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
    except OSError as exc:
        return [], [], f"{exc.strerror or exc}: {getattr(exc, 'filename', None) or folder}"
    notes = []
    from tracer.render.figures import save_report_plots

    try:
        plots = Path(str(base) + "-plots")
        paths += [str(p) for p in save_report_plots(report, str(plots))]
    except ImportError:
        notes.append("report plots left out: install the matplotlib extra")
    except Exception as exc:  # another helper's module: its failure must not lose the tables
        from tracer.errors import user_message

        notes.append(f"report plots left out: {user_message(exc)}")
    return paths, notes, None
