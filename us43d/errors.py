"""Exceptions that carry what a user needs to act: which dataset, which file, what is wrong."""

from __future__ import annotations


class Us43dError(Exception):
    """Base class: every error the CLI turns into a clean message rather than a traceback."""


class RegistryError(Us43dError):
    """A registry entry is invalid, duplicated or unknown."""


class ConversionError(Us43dError):
    """One raw file (or pair) could not be turned into a sample."""

    def __init__(self, reason: str, source_file: str | None = None, dataset: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source_file = source_file
        self.dataset = dataset

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.dataset, self.source_file) if part)
        return f"{where}: {self.reason}" if where else self.reason


class CorpusError(Us43dError):
    """A corpus on disk is missing pieces or breaks one of its promises."""


def os_error_text(exc: OSError) -> str:
    """The system's reason for a failed file operation, with the path it is about: that path may
    be a parent of the file in hand (a full disk, a folder that is a file), so it is worth naming."""
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason
