"""The score table: a CSV row per submission, every detail in the JSON beside it, and the terminal view.

Every cell that comes from a submission (its name, a reason quoting it) is made safe where
it lands: in the CSV a cell that a spreadsheet would read as a formula (``=``, ``+``,
``-``, ``@``, a tab or CR first) is prefixed with ``'``; in the terminal a control
character is shown escaped, so nothing can fake a row. Both files are written atomically
(a private temporary name created with ``O_EXCL|O_NOFOLLOW``, then renamed: `runs.atomic_write`),
so a link planted at the output path is replaced, never followed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..safeio import atomic_write, write_json

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    """``value`` as a CSV cell no spreadsheet runs as a formula."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def printable(text: str) -> str:
    """``text`` with control characters (newlines included) shown escaped, for one terminal line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in str(text))


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``out`` (.csv): one row per submission; beside it the same stem .json with every detail."""
    out = Path(out)
    csv_path = out if out.suffix == ".csv" else out.with_suffix(".csv")
    json_path = csv_path.with_suffix(".json")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    questions = report["questions"]
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["submission", "status", "points", "max_points", "percent", *questions,
                "written_answered", "failed_tests", "flags", "reason"])
    for s in report["submissions"]:
        w.writerow([csv_safe(s["submission"]), csv_safe(s["status"]), f"{s['points']:g}", f"{s['max_points']:g}",
                    s["percent"], *[f"{s['questions'][q]:g}" for q in questions],
                    f"{s['written_answered']}/{s['written_total']}", csv_safe(" ".join(s["failed"])),
                    csv_safe("; ".join(s.get("flags", []))), csv_safe(s["reason"])])
    atomic_write(csv_path, rows.getvalue().encode("utf-8", "backslashreplace"))
    write_json(json_path, report)
    return csv_path, json_path


def format_table(report: dict[str, Any]) -> str:
    """The score table for the terminal."""
    lines = [f"{report['assignment']}: {len(report['submissions'])} submission(s), "
             f"max {report['max_points']:g} points; isolation: {report.get('isolation_level', report['isolation'])}"]
    names = [printable(s["submission"]) for s in report["submissions"]]
    width = max(12, *(len(n) for n in names))
    for name, s in zip(names, report["submissions"]):
        extra = f"  {printable(s['reason'])}" if s["reason"] else ""
        flags = f"  FLAGGED: {printable('; '.join(s['flags']))}" if s.get("flags") else ""
        lines.append(f"  {name:<{width}} {printable(s['status']):<12} {s['points']:>5g} ({s['percent']:5.1f} %)"
                     f"  failed: {len(s['failed'])}{flags}{extra}")
    return "\n".join(lines)
