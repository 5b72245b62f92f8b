"""The score table: a CSV row per submission, every detail in the JSON beside it, and the terminal view."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..runs import atomic_write, write_json


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
                "written_answered", "failed_tests", "reason"])
    for s in report["submissions"]:
        w.writerow([s["submission"], s["status"], f"{s['points']:g}", f"{s['max_points']:g}", s["percent"],
                    *[f"{s['questions'][q]:g}" for q in questions],
                    f"{s['written_answered']}/{s['written_total']}", " ".join(s["failed"]), s["reason"]])
    # atomically, so that an earlier score table is never left half-overwritten
    atomic_write(csv_path, rows.getvalue().encode())
    write_json(json_path, report)
    return csv_path, json_path


def format_table(report: dict[str, Any]) -> str:
    """The score table for the terminal."""
    lines = [f"{report['assignment']}: {len(report['submissions'])} submission(s), "
             f"max {report['max_points']:g} points; isolation: {report['isolation']}"]
    width = max(12, *(len(s["submission"]) for s in report["submissions"]))
    for s in report["submissions"]:
        extra = f"  {s['reason']}" if s["reason"] else ""
        lines.append(f"  {s['submission']:<{width}} {s['status']:<12} {s['points']:>5g} ({s['percent']:5.1f} %)"
                     f"  failed: {len(s['failed'])}{extra}")
    return "\n".join(lines)
