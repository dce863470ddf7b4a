"""Analyses over stored runs (built on `stats`): paired run comparison."""

from .compare import ComparisonRow, RunComparison, compare_runs, paired_scores

__all__ = ["ComparisonRow", "RunComparison", "compare_runs", "paired_scores"]
