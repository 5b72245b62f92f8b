"""``resnet-explorer notebooks | lab | assignment new``: the packaged notebooks for users who
installed the wheel and never cloned the repository (`cli.make_parser` registers them).

The copying is `handout.hand_out` (no link followed, the user's edits kept); the notebooks
come from `notebooks.walkthrough_dir` / `notebooks.student_assignment_dir`, package data in
a wheel and the checkout's folders in an editable install.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

from .errors import UsageError
from .handout import DEFAULT_NOTEBOOK_DIR, Handout, hand_out
from .instructor import BUNDLE_SUFFIX, bundle_matches, make_bundle, read_bundle, unpack_bundle
from .notebooks import SMOKE_ENV, SMOKE_KERNEL_ENV, notebook_paths, student_assignment_dir, walkthrough_dir

ASSIGNMENT = "resnet_basics"
NOTEBOOKS_EXTRA = 'pip install "resnet-explorer[notebooks]"'


def copy_walkthrough(folder: str | os.PathLike) -> Handout:
    """The walkthrough notebooks and their README, copied into ``folder`` (edits kept)."""
    source = walkthrough_dir()
    files = notebook_paths(source) + [p for p in [source / "README.md"] if p.is_file()]
    if not files:
        raise UsageError(f"no walkthrough notebooks in {source}: reinstall resnet-explorer")
    return hand_out(files, folder)


def cmd_notebooks(args: argparse.Namespace) -> int:
    print(copy_walkthrough(args.dir).summary())
    print(f"open them with: resnet-explorer lab {shlex.quote(str(args.dir))}  (short mode: add --smoke)")
    return 0


def lab_command(folder: Path, port: int | None = None, browser: bool = True) -> list[str]:
    """The JupyterLab command for ``folder``: this Python, so the kernel imports this install."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0  # a container's root: Jupyter refuses without it
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
            *([f"--ServerApp.port={port}", "--ServerApp.port_retries=0"] if port else []),
            *([] if browser else ["--no-browser"]), *(["--allow-root"] if root else [])]


def cmd_lab(args: argparse.Namespace) -> int:
    report = copy_walkthrough(args.dir)
    print(report.summary())
    if importlib.util.find_spec("jupyterlab") is None or importlib.util.find_spec("ipykernel") is None:
        raise UsageError(f"JupyterLab is not installed here: {NOTEBOOKS_EXTRA}, then run resnet-explorer lab again")
    env = {**os.environ, **({SMOKE_ENV: "1", **{k: os.environ.get(k, v) for k, v in SMOKE_KERNEL_ENV.items()}}
                            if args.smoke else {})}
    command = lab_command(report.folder.resolve(), args.port, browser=not args.no_browser)
    print(f"starting JupyterLab{' (short mode: ' + SMOKE_ENV + '=1)' if args.smoke else ''}: {shlex.join(command)}",
          flush=True)
    if os.name == "posix":  # JupyterLab becomes this process: Ctrl-C and signals reach it as usual
        os.execve(sys.executable, command, env)
    return subprocess.call(command, cwd=report.folder, env=env)


def cmd_assignment_new(args: argparse.Namespace) -> int:
    notebook = student_assignment_dir() / args.name / f"{args.name}.ipynb"
    if not notebook.is_file():
        available = sorted(p.name for p in student_assignment_dir().glob("*") if p.is_dir())
        raise UsageError(f"no assignment {args.name!r}: use one of {', '.join(available) or '(none installed)'}")
    if args.instructor is not None:  # checked whole before anything is written
        read_bundle(args.instructor, args.name)
    report = hand_out([notebook], args.dir)
    print(report.summary())
    print(f"hand out {report.folder / notebook.name}: students need pip install \"resnet-explorer[grading]\" "
          "for its grader.check cells.")
    if args.instructor is not None:
        instructor = unpack_bundle(args.instructor, Path(args.dir) / "instructor", args.name)
        print(f"instructor material (solution, probes.py, hidden_tests.py) unpacked into {instructor} "
              "(a private folder, mode 700: never give it to students)")
        if bundle_matches(args.instructor, notebook) is False:
            print("note: the bundle was made with another version of the student notebook: hand out the one "
                  f"resnet-explorer assign {instructor} writes, so that both match")
        print(f"grade with: resnet-explorer grade SUBMISSIONS/ --assignment {instructor}")
        return 0
    print(f"The instructor material (solution, probes.py, hidden_tests.py) is not installed with the package: "
          f"students install the same package. Get the instructor bundle {args.name}{BUNDLE_SUFFIX} from your "
          f"course's maintainers (anyone with the resnet-explorer source makes it: resnet-explorer assignment "
          f"bundle assignments/instructor/{args.name}), then run: resnet-explorer assignment new "
          f"{shlex.quote(str(args.dir))} --instructor {args.name}{BUNDLE_SUFFIX}  (it unpacks into a private "
          f"folder), and grade with: resnet-explorer grade SUBMISSIONS/ --assignment "
          f"{shlex.quote(str(Path(args.dir) / 'instructor' / args.name))}")
    return 0


def cmd_assignment_bundle(args: argparse.Namespace) -> int:
    folder = Path(args.instructor_dir)
    student = student_assignment_dir() / folder.name / f"{folder.name}.ipynb"
    out = make_bundle(folder, args.out, student)
    print(f"{out}: the instructor bundle of {folder.name} (solution, probes.py, hidden_tests.py). Send it to "
          f"teachers only, never to students: resnet-explorer assignment new DIR --instructor {out.name}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``notebooks``, ``lab`` and ``assignment`` on the main parser's subcommands."""
    nb = sub.add_parser("notebooks", help="copy the walkthrough notebooks into a folder (your edits are kept)")
    nb.add_argument("dir", nargs="?", default=DEFAULT_NOTEBOOK_DIR, type=Path,
                    help=f"where to copy them (default ./{DEFAULT_NOTEBOOK_DIR})")
    nb.set_defaults(func=cmd_notebooks)

    lab = sub.add_parser("lab", help="copy the walkthrough notebooks and open them in JupyterLab",
                         description="Copy the walkthrough notebooks into DIR (your edits are kept) and start "
                                     f"JupyterLab there. Needs the notebooks extra: {NOTEBOOKS_EXTRA}.")
    lab.add_argument("dir", nargs="?", default=DEFAULT_NOTEBOOK_DIR, type=Path,
                     help=f"the notebooks' folder (default ./{DEFAULT_NOTEBOOK_DIR})")
    lab.add_argument("--smoke", action="store_true",
                     help=f"the notebooks' short mode ({SMOKE_ENV}=1, one torch thread: a minute or two each)")
    lab.add_argument("--port", type=int, help="the server's port (default: JupyterLab's, 8888 or the next free)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser (print the URL)")
    lab.set_defaults(func=cmd_lab)

    asg = sub.add_parser("assignment", help="course assignments for teachers: the student notebook, the "
                         "instructor bundle")
    asg_sub = asg.add_subparsers(dest="assignment_command", required=True, parser_class=type(asg))
    new = asg_sub.add_parser("new", help="write the student notebook into a folder and say where the "
                             "instructor material comes from")
    new.add_argument("dir", type=Path, help="the folder to write the student notebook into")
    new.add_argument("--name", default=ASSIGNMENT, help=f"the assignment (default {ASSIGNMENT})")
    new.add_argument("--instructor", type=Path, metavar="BUNDLE",
                     help=f"the instructor bundle ({ASSIGNMENT}{BUNDLE_SUFFIX}): unpacked into DIR/instructor/NAME, "
                          "a private folder, for resnet-explorer grade")
    new.set_defaults(func=cmd_assignment_new)
    bundle = asg_sub.add_parser("bundle", help="pack an instructor folder into NAME-instructor.zip, for teachers "
                                "who installed with pip (needs the folder: a source checkout's)")
    bundle.add_argument("instructor_dir", help="e.g. assignments/instructor/resnet_basics")
    bundle.add_argument("--out", type=Path, help=f"the bundle file (default ./NAME{BUNDLE_SUFFIX})")
    bundle.set_defaults(func=cmd_assignment_bundle)
