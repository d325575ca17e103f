"""Exceptions. User mistakes derive from `UserError`: the CLI prints them on one line and exits 2."""

from __future__ import annotations


class KvschedError(Exception):
    """Base class of every kvsched error."""


class UserError(KvschedError):
    """Bad input from a user (a file, an option, a parameter). Printed as one line, exit code 2."""


class WorkloadError(UserError):
    """A trace or workload spec is malformed.

    The message names the file, the (1-based data) row and the field, and what was expected.
    """

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None,
                 field: str | None = None) -> None:
        where = [p for p in (path, None if row is None else f"row {row}",
                             None if field is None else f"field '{field}'") if p]
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")
        self.path, self.row, self.field = path, row, field


class ConfigError(UserError):
    """A bad option, policy id, parameter name or value."""


class InfeasibleDecisionError(KvschedError):
    """A policy returned a decision the engine cannot carry out (the engine never repairs one)."""


class StalledError(KvschedError):
    """The policy scheduled nothing while work remains and nothing can arrive to change that."""
