"""The errors a user can cause, each one clear line: what was wrong and what to do.

Every error that means bad input (a spec, a recipe, a dataset, a run directory, a command
line) derives from `UserError`. The command line prints such an error as one line and
exits 2; the widgets show it as one line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a run that cannot go on; the message is one line that says what to do."""


class SpecError(UserError, ValueError):
    """An invalid architecture: the message names the bad value and the valid ones."""


class RecipeError(UserError, ValueError):
    """An invalid training recipe (an unknown name, a field, a value out of range)."""


class DataError(UserError, ValueError):
    """A dataset that is missing or malformed; the message names the path and the layout
    that was expected."""


class UsageError(UserError, ValueError):
    """A command-line or API call that does not fit together (a missing option, a bad list)."""


class TrainingError(UserError, RuntimeError):
    """A run that cannot go on (divergence, a run directory in the way)."""


class EvalError(UserError, ValueError):
    """A checkpoint or run directory that cannot be evaluated."""


class DistributedError(UserError, RuntimeError):
    """A torchrun launch that cannot work (bad world size, backend, batch split)."""


class GradingError(UserError, ValueError):
    """Bad input to the grader (missing folder, not a notebook …)."""


def one_line(e: BaseException, limit: int | None = 160) -> str:
    """The first line of an error's message (its type's name when it has none), cut to
    ``limit`` characters with an ellipsis: how an error is quoted inside another message or
    shown in a widget, never as a traceback. ``limit=None`` keeps the whole line."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"
