"""The exceptions orthocad raises, and the exit code each one maps to.

The library raises; only :mod:`orthocad.cli` turns these into one-line
messages and exit codes. Every message names the problem and the fix.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, the same for every command."""

    OK = 0
    INTERNAL = 1  #: a bug in orthocad
    BAD_INPUT = 2  #: bad input or usage: file, units, parameters, manifest
    REJECTED = 3  #: processed but rejected or partly failed


class OrthocadError(Exception):
    """Base of every error orthocad raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


class InputError(OrthocadError):
    """The user's input cannot be used as given (exit 2)."""

    exit_code = ExitCode.BAD_INPUT


class ScanReadError(InputError):
    """A scan file is missing, of an unknown format, empty or corrupt."""


class UnitsError(InputError):
    """The scan's units cannot be determined, or the given units make it no foot."""


class NotAFootError(InputError):
    """The data read is not a foot this tool can process."""


class ParameterError(InputError):
    """A parameter file or value is invalid."""


class RejectedError(OrthocadError):
    """The input was processed but the result must not be used (exit 3)."""

    exit_code = ExitCode.REJECTED
