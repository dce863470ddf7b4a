"""Analyses over stored runs (built on `stats`): paired run comparison and power planning."""

from .compare import ComparisonRow, RunComparison, compare_runs, paired_scores
from .power import power_plan

__all__ = ["ComparisonRow", "RunComparison", "compare_runs", "paired_scores", "power_plan"]
