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


def usage_message(exc: UsageError) -> str:
    """The one-line message of ``exc``. A ``UsageError`` raised in a ``DataLoader`` worker
    process comes back re-raised by PyTorch with the message ``"Caught UsageError in DataLoader
    worker process N.\\nOriginal Traceback (most recent call last): ..."``; this returns the
    original message from its last line."""
    text = str(exc)
    marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    if text.startswith("Caught ") and "Original Traceback" in text and marker in text:
        text = text.rsplit(marker, 1)[1]
    return " ".join(text.strip().split("\n"))
