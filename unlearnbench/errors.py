"""User-facing errors: one clear sentence naming the bad value and what is accepted."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A problem with the user's input (names, files, config); printed without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without a closing full stop (its class name when empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines and lines[0].strip(".") else exc.__class__.__name__


def error_reason(exc: BaseException) -> str:
    """'ExceptionClass: first line of its message', the reason recorded for a failed job."""
    return f"{exc.__class__.__name__}: {first_line(exc)}" if str(exc).strip(". \n") else exc.__class__.__name__


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice (a similar spelling, or a choice that begins with the
    name or the name with it: vit → vit_tiny), or '' when none is close (difflib's 0.5 took 'colour' for 'slurm')."""
    name, choices = str(name), [str(c) for c in choices]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6) or [
        c for c in choices if min(len(name), len(c)) >= 2 and (c.startswith(name) or name.startswith(c))][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


class DataFileError(UserError):
    """A dataset file that exists but is truncated or corrupt; the message names the file and what is wrong."""
