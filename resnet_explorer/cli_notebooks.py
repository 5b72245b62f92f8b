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
from .notebooks import SMOKE_ENV, notebook_paths, student_assignment_dir, walkthrough_dir

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
    env = {**os.environ, **({SMOKE_ENV: "1"} if args.smoke else {})}
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
    report = hand_out([notebook], args.dir)
    print(report.summary())
    print(f"hand out {report.folder / notebook.name}: students need pip install \"resnet-explorer[grading]\" "
          "for its grader.check cells.")
    print(f"The instructor material (solution, probes.py, hidden_tests.py) is not in the package, so that "
          f"students cannot read it: it is in the resnet-explorer source repository, "
          f"assignments/instructor/{args.name}. Keep your copy private (chmod -R go-rwx), then "
          f"resnet-explorer grade SUBMISSIONS/ --assignment YOUR_COPY/{args.name}")
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
                     help=f"the notebooks' short mode ({SMOKE_ENV}=1: a couple of minutes each on a laptop)")
    lab.add_argument("--port", type=int, help="the server's port (default: JupyterLab's, 8888 or the next free)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser (print the URL)")
    lab.set_defaults(func=cmd_lab)

    asg = sub.add_parser("assignment", help="course assignments for teachers: the student notebook")
    asg_sub = asg.add_subparsers(dest="assignment_command", required=True, parser_class=type(asg))
    new = asg_sub.add_parser("new", help="write the student notebook into a folder and say where the "
                             "instructor material comes from")
    new.add_argument("dir", type=Path, help="the folder to write the student notebook into")
    new.add_argument("--name", default=ASSIGNMENT, help=f"the assignment (default {ASSIGNMENT})")
    new.set_defaults(func=cmd_assignment_new)
