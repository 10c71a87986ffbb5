"""User-facing errors: one clear sentence naming the bad value and what is accepted."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A problem with the user's input (names, files, config); printed without a traceback."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class DataFileError(UserError):
    """A dataset file that exists but is truncated or corrupt; the message names the file and what is wrong."""
