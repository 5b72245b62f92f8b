"""``resnet-explorer assign | grade``: course assignments for teachers (`cli.make_parser`
registers them). The work is `grading.assign` and `grading.grade`; here are the options.

The soft limits (``--cell-timeout``, ``--test-timeout``; by default a fifth and a fifteenth
of ``--timeout``) are small beside it on purpose: a function that never returns costs a
submission one cell timeout plus one test timeout per test that calls it, and that must leave
the rest of its CPU time for the questions it answered, so a loop in one function loses only
that question.
"""

from __future__ import annotations

import argparse
import math

from .errors import UsageError
from .grading.sandbox import Limits

DEFAULT = Limits()
CELL_SHARE, TEST_SHARE = DEFAULT.cell_s / DEFAULT.cpu_s, DEFAULT.probe_s / DEFAULT.cpu_s  # 1/5, 1/15


def _seconds(option: str, value: float | None) -> float | None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{option} {value:g} is invalid: give a positive number of seconds")
    return value


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The per-submission `Limits` the options give; a soft limit over the CPU budget is one line."""
    cpu = _seconds("--timeout", args.timeout)
    if cpu < 1:
        raise UsageError(f"--timeout {cpu:g} is too small: the CPU limit counts whole seconds; give 1 or more")
    wall = _seconds("--wall-timeout", args.wall_timeout) or 2 * cpu
    cell = _seconds("--cell-timeout", args.cell_timeout) or round(cpu * CELL_SHARE, 1)
    test = _seconds("--test-timeout", args.test_timeout) or round(cpu * TEST_SHARE, 1)
    for option, value in (("--cell-timeout", cell), ("--test-timeout", test)):
        if value >= cpu:
            raise UsageError(f"{option} {value:g} is not below --timeout {cpu:g}: one slow cell or test "
                             f"would use a submission's whole CPU time; give a smaller {option} or a larger --timeout")
    return Limits(wall_s=wall, cpu_s=int(cpu), memory_mb=args.memory_mb, cell_s=cell, probe_s=test)


def cmd_assign(args: argparse.Namespace) -> int:
    from .grading.assign import make_student_version

    print(make_student_version(args.assignment, args.out))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from .grading.grade import format_table, grade_folder, write_report

    limits = limits_from_args(args)

    def started(isolation: str) -> None:
        print(f"isolation: {isolation}", flush=True)
        print(f"limits per submission: {limits.cpu_s} s CPU, {limits.wall_s:g} s wall clock, {limits.memory_mb} MB; "
              f"{limits.cell_s:g} s per cell, {limits.probe_s:g} s per test", flush=True)

    report = grade_folder(args.submissions, args.assignment, limits, jobs=args.jobs, seed=args.seed,
                          sandbox=args.sandbox, on_start=started)
    csv_path, json_path = write_report(report, args.out)
    print(format_table(report))
    print(f"scores: {csv_path} (details: {json_path})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``assign`` and ``grade`` on the main parser's subcommands."""
    asg = sub.add_parser("assign", help="course assignments: the student notebook from a solution notebook")
    asg.add_argument("assignment", help="the instructor folder, e.g. assignments/instructor/resnet_basics")
    asg.add_argument("--out", help="student folder (default: the matching assignments/student/NAME)")
    asg.set_defaults(func=cmd_assign)

    grd = sub.add_parser("grade", help="grade a folder of submitted notebooks (sandboxed) into a score table")
    grd.add_argument("submissions", help="folder of submitted .ipynb files")
    grd.add_argument("--assignment", required=True, help="the instructor folder (solution, probes, hidden tests)")
    grd.add_argument("--out", default="scores.csv", help="score table (.csv; the .json beside it has details)")
    grd.add_argument("--jobs", type=int, default=2, help="submissions graded at once")
    grd.add_argument("--timeout", type=float, default=float(DEFAULT.cpu_s),
                     help="CPU seconds per submission, all its processes together")
    grd.add_argument("--wall-timeout", type=float, help="wall-clock seconds per submission (default: 2 x --timeout)")
    grd.add_argument("--cell-timeout", type=float, help="CPU seconds one notebook cell may use (or spend waiting "
                     "without running; other submissions' load does not count); past it that cell fails alone "
                     f"(SoftTimeout; default: --timeout / {1 / CELL_SHARE:g})")
    grd.add_argument("--test-timeout", type=float, help="CPU seconds one hidden test may use (or spend waiting "
                     "without running); past it that test fails alone "
                     f"(SoftTimeout; default: --timeout / {1 / TEST_SHARE:g})")
    grd.add_argument("--memory-mb", type=int, default=DEFAULT.memory_mb,
                     help="memory per submission: all its processes (cgroup), and each one's address space "
                          "(torch alone maps ~3.3 GB)")
    grd.add_argument("--sandbox", choices=["auto", "bwrap", "rlimits"], default="auto",
                     help="auto: the best isolation here (printed); bwrap: require bubblewrap; rlimits: the fallback")
    grd.add_argument("--seed", type=int, help="the test inputs' seed (default: random, chosen now)")
    grd.set_defaults(func=cmd_grade)
