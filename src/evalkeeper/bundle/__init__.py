"""Bundles (S6P1), environment capture (S6P4) and reproducibility (S7P4)."""

from evalkeeper.bundle.env import capture_environment, diff_environments, summarize_environment

__all__ = ["capture_environment", "diff_environments", "summarize_environment"]
