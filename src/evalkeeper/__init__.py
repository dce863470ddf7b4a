"""evalkeeper: package, report, publish and govern LLM evaluations."""

__version__ = "0.1.0"
