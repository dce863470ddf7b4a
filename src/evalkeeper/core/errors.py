"""The one error type users see: a message that says what was wrong, where, and what to do."""

from __future__ import annotations


class EvalkeeperError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits with `exit_code`."""

    exit_code: int = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.path = path
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.path}: " if self.path else ""
        tail = f"\n  hint: {self.hint}" if self.hint else ""
        return f"{where}{self.message}{tail}"


class ImportFormatError(EvalkeeperError):
    """A file could not be imported: unknown, truncated or malformed foreign format."""


class NotFoundError(EvalkeeperError):
    """A run, task, baseline or other named thing does not exist."""


class ConfigError(EvalkeeperError):
    """A configuration/policy/task file is invalid."""
