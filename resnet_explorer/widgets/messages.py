"""The one-line messages the widgets show instead of tracebacks."""

from __future__ import annotations

import html

from .. import errors
from ..errors import UserError


def message_html(text: str | None, kind: str = "error") -> str:
    """``text`` as the widget's message line (red for an error, grey for info); "" for none."""
    if not text:
        return ""
    color = {"error": "#b00020", "info": "#333"}[kind]
    return f"<div class='rx-{kind}' style='color:{color}'>{html.escape(text)}</div>"


def one_line(e: BaseException) -> str:
    """An exception as the one line a user sees (no traceback): a `UserError`'s own words,
    anything else (a bug) prefixed by its type."""
    text = errors.one_line(e, limit=None)
    if isinstance(e, (UserError, ValueError, FileNotFoundError)):
        return text
    return f"{type(e).__name__}: {text}"
