"""Exceptions that say the user, not the code, is at fault."""
from __future__ import annotations


class UsageError(ValueError):
    """Bad user input: a command-line value, a data folder or file, a missing optional package.

    Raise it where user input is validated (argument checks, data sets reading files); the
    message names the option or the file (and line) and what was expected. ``sapa compare``
    prints it as one line, ``sapa compare: error: <message>``, and exits with status 2; every
    other exception is a bug and keeps its traceback. It is a ``ValueError``, so code that
    catches ``ValueError`` around a library call still catches it.
    """


def check_installed(*packages: str, needed_for: str, extra: str) -> None:
    """Raise ``UsageError`` unless every top-level package in ``packages`` can be found (without
    importing it), e.g. ``check_installed("timm", needed_for="--model fpn", extra="timm")``."""
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise UsageError(f"{needed_for} needs {', '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed: "
                         f"pip install 'sapa[{extra}]'")
