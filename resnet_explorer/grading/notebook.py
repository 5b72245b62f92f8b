"""A submitted notebook read as data: checked against the nbformat 4 schema, its code cells
(otter's own lines removed) and its written answers.

Any notebook may be hostile: it is parsed with a cap on its size and on the length of its
numbers, and validated with `nbformat` before any field is used, so a malformed field
(a ``source`` of ``[1]``, string ``metadata``, ``"tags": 5``) makes it `invalid` with the
schema's reason, never a crash of the grader.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from ..errors import GradingError

MAX_NOTEBOOK_BYTES = 20 * 2**20
PLACEHOLDER = "_Type your answer here, replacing this text._"

_OTTER_LINE = re.compile(r"^\s*(import otter\b.*|grader\s*=\s*otter\..*|grader\.check(_all)?\(.*\).*)$")


MAX_DIGITS = 100


def _bounded_int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def parse_notebook(data: bytes, name: str) -> dict:
    """The notebook in ``data`` (the file ``name``), schema-checked, or `GradingError` saying what is wrong."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise GradingError(f"{name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    try:
        nb = json.loads(data, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise GradingError(f"{name} is not a notebook (not JSON)") from None
    except ValueError as e:
        raise GradingError(f"{name} is not a valid notebook: it holds {e}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise GradingError(f"{name} is not a notebook (no cell list)")
    version = nb.get("nbformat")
    if version != 4:
        raise GradingError(f"{name} is nbformat {str(version)[:20]}: only nbformat 4 notebooks are graded "
                           "(open it in Jupyter and save it)")
    import nbformat

    try:
        with warnings.catch_warnings():  # a cell without an id (nbformat 4.5) is harmless here
            warnings.simplefilter("ignore")
            nbformat.validate(nbformat.from_dict(nb))
    except nbformat.ValidationError as e:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".")
        message = str(e.message)
        message = message if len(message) < 200 else message[:199] + "…"
        raise GradingError(f"{name} is not a valid notebook: {where or 'the top level'}: {message}") from None
    except Exception as e:  # a schema check that cannot finish (nesting too deep) is a bad notebook too
        raise GradingError(f"{name} is not a valid notebook ({type(e).__name__})") from None
    return nb


def read_notebook(path: Path) -> dict:
    """The notebook at ``path`` (a trusted path: the solution), or `GradingError` with what is wrong with it."""
    with open(path, "rb") as f:
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    return parse_notebook(data, path.name)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(map(str, src)) if isinstance(src, list) else str(src)


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
            meta = cell.get("metadata")
            tags = meta.get("tags") if isinstance(meta, dict) else None
            if isinstance(tags, list) and "otter_answer_cell" in tags:
                answers.append(_source(cell).strip())
    return answers


def answered(text: str) -> bool:
    return bool(text) and text != PLACEHOLDER and PLACEHOLDER not in text
