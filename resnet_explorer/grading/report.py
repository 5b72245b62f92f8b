"""The score table: a CSV row per submission, every detail in the JSON beside it, and the terminal view.

Every cell that comes from a submission (its name, a reason quoting it) is made safe where
it lands: in the CSV a cell that a spreadsheet would read as a formula (``=``, ``+``,
``-``, ``@``, a tab or CR first) is prefixed with ``'``; in the terminal a control
character is shown escaped, so nothing can fake a row. The JSON is strict (``allow_nan=False``:
every parser reads it) and both files are always written, for every entry: a value JSON
cannot hold is written as text, and a row that cannot be written at all becomes an ``error``
row saying so. Both are written atomically (a private temporary name created with
``O_EXCL|O_NOFOLLOW``, then renamed: `safeio.atomic_write`), so a link planted at the
output path is replaced, never followed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..safeio import atomic_write

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_DEPTH = 20


def csv_safe(value: Any) -> str:
    """``value`` as a CSV cell no spreadsheet runs as a formula."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def printable(text: str) -> str:
    """``text`` with control characters (newlines included) shown escaped, for one terminal line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in str(text))


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as strict JSON can hold it: non-finite floats as None, text without lone surrogates,
    integers too long to write and any other object as a short text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if value.bit_length() < 1000 else f"a number of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    if depth > MAX_DEPTH:
        return "(nested too deeply)"
    if isinstance(value, dict):
        return {plain(str(k)): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    return plain(repr(value)[:200])


def _error_row(row: Any, questions: list[str], e: Exception) -> dict[str, Any]:
    name = row.get("submission", "?") if isinstance(row, dict) else "?"
    return {"submission": plain(str(name)[:300]), "status": "error",
            "reason": f"the grader could not write this row ({type(e).__name__})", "points": 0, "max_points": 0,
            "percent": 0.0, "questions": {q: 0 for q in questions}, "failed": [], "written_answered": 0,
            "written_total": 0, "flags": [], "tests": []}


def _csv_row(s: dict[str, Any], questions: list[str]) -> list[Any]:
    return [csv_safe(s["submission"]), csv_safe(s["status"]), f"{s['points']:g}", f"{s['max_points']:g}",
            s["percent"], *[f"{s['questions'][q]:g}" for q in questions],
            f"{s['written_answered']}/{s['written_total']}", csv_safe(" ".join(s["failed"])),
            csv_safe("; ".join(s.get("flags", []))), csv_safe(s["reason"])]


def _rows(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Every submission's JSON row and CSV row; one that cannot be written is an error row, the rest go on."""
    questions = report["questions"]
    kept, lines = [], []
    for s in report["submissions"]:
        try:
            row = plain(s)
            json.dumps(row, allow_nan=False)
            line = _csv_row(row, questions)
        except Exception as e:  # whatever one row holds, the others are written
            row = _error_row(s, questions, e)
            line = _csv_row(row, questions)
        kept.append(row)
        lines.append(line)
    return kept, lines


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``out`` (.csv): one row per submission; beside it the same stem .json with every detail."""
    out = Path(out)
    csv_path = out if out.suffix == ".csv" else out.with_suffix(".csv")
    json_path = csv_path.with_suffix(".json")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    questions = report["questions"]
    kept, lines = _rows(report)
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["submission", "status", "points", "max_points", "percent", *questions,
                "written_answered", "failed_tests", "flags", "reason"])
    w.writerows(lines)
    atomic_write(csv_path, rows.getvalue().encode("utf-8", "backslashreplace"))
    whole = plain({k: v for k, v in report.items() if k != "submissions"})
    whole["submissions"] = kept
    atomic_write(json_path, (json.dumps(whole, indent=2, allow_nan=False) + "\n").encode())
    return csv_path, json_path


def format_table(report: dict[str, Any]) -> str:
    """The score table for the terminal."""
    lines = [f"{report['assignment']}: {len(report['submissions'])} submission(s), "
             f"max {report['max_points']:g} points; isolation: {report.get('isolation_level', report['isolation'])}"]
    kept, _ = _rows(report)
    names = [printable(s["submission"]) for s in kept]
    width = max(12, *(len(n) for n in names))
    for name, s in zip(names, kept):
        extra = f"  {printable(s['reason'])}" if s["reason"] else ""
        flags = f"  FLAGGED: {printable('; '.join(s['flags']))}" if s.get("flags") else ""
        lines.append(f"  {name:<{width}} {printable(s['status']):<12} {s['points']:>5g} ({s['percent']:5.1f} %)"
                     f"  failed: {len(s['failed'])}{flags}{extra}")
    return "\n".join(lines)
