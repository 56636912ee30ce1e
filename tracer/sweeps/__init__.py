"""Sweeps over many facts: the sweep loop and its events (run.py), the resumable results file with its one
writer and its readers (results.py), ROME's statistics (stats.py), the records -> SweepReport (aggregate.py)
and ROME's per-case .npz files (npz.py). The report's text, CSV and JSON are in tracer/render/sweep_report.py."""
