"""Export the grid on screen: a text file (plotext drawing without colour + the numbers),
with CSV and JSON of the whole result beside it (tracer.export)."""

from __future__ import annotations

from pathlib import Path

from tracer import export
from tracer.plot import render_text


def export_text(result, view, width: int = 100) -> str:
    """The current view drawn without colour codes, then the labelled number tables."""
    width = max(width, 24 + 3 * max((len(r) for r in view.values), default=0))
    drawing = render_text(view.values, view.labels, title=view.title, metric=view.metric, width=min(width, 200))
    return drawing + "\n" + export.to_text(result, view.metric)


def write_exports(result, view, folder: str | Path, stamp: str) -> dict[str, str]:
    """Write <folder>/trace-<stamp>.{txt,csv,json}; raises OSError when the folder is unusable."""
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"trace-{stamp}"
    n = 1
    while any(base.with_suffix(s).exists() for s in (".txt", ".csv", ".json")):
        n += 1
        base = folder / f"trace-{stamp}-{n}"
    paths = {s: str(base.with_suffix(f".{s}")) for s in ("txt", "csv", "json")}
    Path(paths["txt"]).write_text(export_text(result, view), encoding="utf-8")
    Path(paths["csv"]).write_text(export.to_csv(result), encoding="utf-8")
    Path(paths["json"]).write_text(export.dumps(export.to_json(result), indent=1) + "\n", encoding="utf-8")
    return paths
