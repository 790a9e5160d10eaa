"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class: the message is what the user sees; exit_code is the process status."""

    exit_code = 1


class ProfileError(ApplianceError):
    """A profile is invalid. Printed as ``PATH: key.path: message``."""

    exit_code = 2

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path = path
        self.key = key
        self.message = message
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {message}")


class RuleFileError(ApplianceError):
    """A signature file is invalid. Printed as ``FILE:LINE: message``."""

    exit_code = 2

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path}:{line}: {message}")


class UsageError(ApplianceError):
    """Bad command-line input (an unknown set, a malformed element)."""

    exit_code = 2


class KernelError(ApplianceError):
    """The kernel refused a change; it keeps what it had."""

    exit_code = 1
