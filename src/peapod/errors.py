"""Errors that the command line turns into one clear message (file, line, problem)."""

from __future__ import annotations

from pathlib import Path


class PeapodError(Exception):
    """Base class for every error peapod raises on purpose (bad input, bad configuration)."""


class DataFormatError(PeapodError):
    """A dataset file is missing or malformed.

    The message always names the file, and the line (1-based) when one is to blame.
    """

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {problem}")


class ConfigError(PeapodError):
    """A configuration file, preset or override is invalid."""


class UnknownIdError(PeapodError, KeyError):
    """A user or item id is not known to the dataset, the embeddings or the model."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown id"
