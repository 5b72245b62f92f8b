"""A submitted notebook read as data: its code cells (otter's own lines removed) and written answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import GradingError

MAX_NOTEBOOK_BYTES = 20 * 2**20
PLACEHOLDER = "_Type your answer here, replacing this text._"

_OTTER_LINE = re.compile(r"^\s*(import otter\b.*|grader\s*=\s*otter\..*|grader\.check(_all)?\(.*\).*)$")


def read_notebook(path: Path) -> dict:
    """The notebook's JSON, or `GradingError` with what is wrong with it."""
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise GradingError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    try:
        nb = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise GradingError(f"{path.name} is not a notebook (not JSON)") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise GradingError(f"{path.name} is not a notebook (no cell list)")
    return nb


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def code_cells(nb: dict) -> list[str]:
    """The code cells, without otter's own lines (its init and ``grader.check`` calls)."""
    cells = []
    for cell in nb["cells"]:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            lines = _source(cell).splitlines()
            cells.append("\n".join("" if _OTTER_LINE.match(l) else l for l in lines))
    return cells


def written_answers(nb: dict) -> list[str]:
    """The text of the written-answer cells (markdown cells tagged ``otter_answer_cell``)."""
    answers = []
    for cell in nb["cells"]:
        if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
            tags = (cell.get("metadata") or {}).get("tags") or []
            if "otter_answer_cell" in tags:
                answers.append(_source(cell).strip())
    return answers


def answered(text: str) -> bool:
    return bool(text) and text != PLACEHOLDER and PLACEHOLDER not in text
