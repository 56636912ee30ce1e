"""Per-cell metrics."""

from __future__ import annotations


def recovery_percent(p_patched: float, p_clean: float, p_corrupted: float) -> float:
    """100 (p - p_corrupted) / (p_clean - p_corrupted); 0 when clean equals corrupted."""
    gap = p_clean - p_corrupted
    if abs(gap) < 1e-12:
        return 0.0
    return 100.0 * (p_patched - p_corrupted) / gap


cell_metrics = recovery_percent
