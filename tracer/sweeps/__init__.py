"""Sweeps over many facts: the facts (facts.py), the resumable results file (files.py), the sweep
loop and its events (run.py), ROME's statistics (stats.py), the records -> SweepReport
(sweep_report.py), the report's rendering (report.py) and ROME's
per-case .npz files (npz.py)."""

from .run import *  # noqa: F401,F403
from .run import __all__  # noqa: F401
