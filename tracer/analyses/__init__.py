"""Analyses built on traces: summaries of a grid, robustness under several corruptions."""
