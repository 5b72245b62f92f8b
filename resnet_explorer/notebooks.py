"""The walkthrough notebooks (``notebooks/*.ipynb``): strip, check and run them headless.

    python -m resnet_explorer.notebooks list              # the notebooks of this checkout
    python -m resnet_explorer.notebooks strip [NB ...]    # remove outputs and execution counts, in place
    python -m resnet_explorer.notebooks check [NB ...]    # exit 1 unless every one is output-free
                                                          # and has exactly one "parameters" cell
    python -m resnet_explorer.notebooks setup [NB ...]    # (re)write the setup cell and short-mode line
    python -m resnet_explorer.notebooks links --repo OWNER/NAME   # the Colab link list of notebooks/README.md
    python -m resnet_explorer.notebooks run --smoke [NB ...] [--out DIR]
                                                          # execute top to bottom (nbclient), print times

Each notebook reads its mode from its tagged ``parameters`` cell: ``MODE = "smoke"`` when
the environment variable ``RESNET_EXPLORER_SMOKE=1`` is set (the CI setting, a couple of
minutes on a 2-core CPU), ``"cpu"`` otherwise (a laptop), or ``"gpu"`` (the paper's
settings) when edited or injected with papermill (``-p MODE gpu``). Runs are written
under ``$RESNET_EXPLORER_RUNS`` (default ``runs/``, relative to the working directory).

The kernel is this Python (``sys.executable``) with ipykernel, whatever kernels are
installed for the user, so a notebook always imports the resnet_explorer that runs it.
Needs the ``notebooks`` extra (nbformat, nbclient, ipykernel).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

SMOKE_ENV = "RESNET_EXPLORER_SMOKE"
RUNS_ENV = "RESNET_EXPLORER_RUNS"
PARAMETERS_TAG = "parameters"
KERNEL_NAME = "resnet-explorer-python"
SUMMARY_MARK = "<<resnet-explorer-summary>>"
SETUP_TAG = "setup"
# The short mode's kernel: torch's idle threads sleep (no spinning on a shared CPU), one thread
# for the tiny nets (the setup cell sets the same where the kernel was started otherwise).
SMOKE_KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
_PACKAGE = Path(__file__).resolve().parent


def walkthrough_dir() -> Path:
    """Where the walkthrough notebooks are: inside the package in a wheel install (package
    data ``resnet_explorer/walkthrough``, mapped from ``notebooks/`` at build time), else the
    ``notebooks/`` folder of the source checkout (an editable install)."""
    packaged = _PACKAGE / "walkthrough"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "notebooks"


def student_assignment_dir() -> Path:
    """The student assignments (``<name>/<name>.ipynb``): package data in a wheel, else the
    checkout's ``assignments/student``. Instructor material is never package data."""
    packaged = _PACKAGE / "student_assignments"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "assignments" / "student"


NOTEBOOK_DIR = walkthrough_dir()

# The first code cell of every notebook, identical in all (tests/test_notebooks.py checks it;
# `python -m resnet_explorer.notebooks setup` writes it): the d2l convention of one
# commented install line for hosted notebooks, and a one-line message instead of a traceback.
SETUP_SOURCE = """\
# Setup. In a hosted notebook (Colab, ...) without resnet-explorer, uncomment the next line, run it,
# then restart the kernel. Elsewhere: pip install "resnet-explorer[notebooks]" (a checkout: pip install -e ".[notebooks]").
# %pip install "resnet-explorer[notebooks]"
import importlib.util
import os

# Cheap on a shared CPU (set before torch loads): idle threads sleep instead of spinning, and the
# short mode trains its tiny nets on one thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if os.environ.get("RESNET_EXPLORER_SMOKE") == "1":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
if importlib.util.find_spec("resnet_explorer") is None:
    raise ModuleNotFoundError('resnet_explorer is not installed in this kernel: run %pip install '
                              '"resnet-explorer[notebooks]" in a cell (or pip in a terminal), then restart the kernel')
import resnet_explorer

print(f"resnet_explorer {resnet_explorer.__version__} from {resnet_explorer.__file__}")"""
# The line every parameters cell carries after its header comments: how to pick the short mode.
SHORT_MODE_LINE = '# Short mode (minutes on a laptop): MODE = "smoke" here, or start JupyterLab with resnet-explorer lab --smoke.'


def notebook_paths(folder: str | os.PathLike = NOTEBOOK_DIR) -> list[Path]:
    """The walkthrough notebooks in ``folder``, in their numbered order."""
    return sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("."))


def _read(path: str | os.PathLike):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def strip_notebook(nb: Any) -> bool:
    """Remove outputs, execution counts and saved widget state from ``nb`` in place.

    Returns whether anything changed.
    """
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if cell.get("outputs") or cell.get("execution_count") is not None:
                changed = True
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
        if cell.cell_type != "code" and "attachments" in cell and not cell.attachments:
            del cell["attachments"]
            changed = True
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
        changed = True
    return changed


def _rewrite(paths: Sequence[str | os.PathLike], edit: Callable[[Any], bool]) -> list[Path]:
    """``edit`` each notebook file in place (it returns whether it changed the notebook);
    returns the files that changed, the only ones written."""
    import nbformat

    changed = []
    for path in paths:
        nb = _read(path)
        if edit(nb):
            nbformat.write(nb, str(path))
            changed.append(Path(path))
    return changed


def strip(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Strip each notebook file in place; returns the ones that changed."""
    return _rewrite(paths, strip_notebook)


def problems(nb: Any) -> list[str]:
    """What keeps a notebook from being committed: outputs, execution counts, widget
    state, or not exactly one cell tagged ``parameters``."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.get("outputs"):
            found.append(f"cell {i} has outputs")
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            found.append(f"cell {i} has an execution count")
    if "widgets" in nb.metadata:
        found.append("saved widget state in the notebook metadata")
    tagged = [i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        found.append(f"{len(tagged)} cells tagged {PARAMETERS_TAG!r} (need exactly one)")
    elif nb.cells[tagged[0]].cell_type != "code":
        found.append(f"the {PARAMETERS_TAG!r} cell is not a code cell")
    return found


def check(paths: Sequence[str | os.PathLike]) -> dict[str, list[str]]:
    """``{path: problems}`` (`problems` and `setup_problems`) for the notebooks that have any."""
    return {str(p): found for p in paths if (found := problems(nb := _read(p)) + setup_problems(nb))}


def parameters_source(nb: Any) -> str:
    """The source of the notebook's ``parameters`` cell."""
    for cell in nb.cells:
        if PARAMETERS_TAG in cell.metadata.get("tags", []):
            return cell.source
    raise ValueError(f"no cell tagged {PARAMETERS_TAG!r}")


def apply_setup(nb: Any) -> bool:
    """Give ``nb`` the setup cell (`SETUP_SOURCE`, tagged ``setup``) as its first code cell and
    the `SHORT_MODE_LINE` in its parameters cell; re-runnable. Returns whether it changed."""
    import nbformat

    def state() -> list:
        return [(c.get("id"), c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]

    before = state()
    nb.cells = [c for c in nb.cells if SETUP_TAG not in c.metadata.get("tags", [])]
    cell = nbformat.v4.new_code_cell(SETUP_SOURCE)
    cell.metadata["tags"] = [SETUP_TAG]
    if "id" in cell:  # a fixed id: re-applying it leaves the file as it was
        cell.id = "resnet-explorer-setup"
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, cell)
    for c in nb.cells:
        if PARAMETERS_TAG in c.metadata.get("tags", []) and SHORT_MODE_LINE not in c.source:
            lines = c.source.split("\n")
            header = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
            c.source = "\n".join(lines[:header] + [SHORT_MODE_LINE] + lines[header:])
    return before != state()


def setup_problems(nb: Any) -> list[str]:
    """What the setup convention misses in ``nb``: the setup cell first, the short-mode line."""
    found = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or code[0].source != SETUP_SOURCE or SETUP_TAG not in code[0].metadata.get("tags", []):
        found.append(f"the first code cell is not the {SETUP_TAG!r} cell (fix: python -m resnet_explorer.notebooks setup)")
    if sum(SETUP_TAG in c.metadata.get("tags", []) for c in nb.cells) > 1:
        found.append(f"more than one cell tagged {SETUP_TAG!r}")
    params = [c for c in nb.cells if PARAMETERS_TAG in c.metadata.get("tags", [])]
    if params and SHORT_MODE_LINE not in params[0].source:
        found.append("the parameters cell does not say how to pick the short mode")
    return found


def apply_setup_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """`apply_setup` on each notebook file, in place; returns the ones that changed."""
    return _rewrite(paths, apply_setup)


def hosted_links(repo: str, branch: str = "main") -> str:
    """A markdown list of the walkthrough as Colab links to the GitHub repository ``repo``
    (``owner/name``): the list in ``notebooks/README.md``, rewritten once the repository is public."""
    rows = [f"- [{p.stem}](https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{p.name})"
            for p in notebook_paths(walkthrough_dir())]
    return "\n".join(rows)


# -- running ----------------------------------------------------------------------------------------
@dataclass
class Executed:
    """A notebook after a headless run."""

    path: Path
    nb: Any  # the executed notebook (outputs included)
    seconds: float
    summary: Any  # the notebook's SUMMARY variable (JSON round trip), if asked for and defined

    def text(self) -> str:
        """All text the cells printed or displayed as text/plain, in order."""
        parts = []
        for cell in self.nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    parts.append(out.get("text", ""))
                elif "data" in out:
                    parts.append(out["data"].get("text/plain", ""))
        return "\n".join(parts)


def _kernel_manager(kernel_dir: Path, env: dict[str, str]):
    """A kernel manager for ``sys.executable -m ipykernel_launcher`` with ``env`` added."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = kernel_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (resnet-explorer)", "language": "python", "env": env,
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def execute(
    path: str | os.PathLike, smoke: bool = True, cwd: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None, timeout: int | None = 1200, summary: str | None = "SUMMARY",
    env: dict[str, str] | None = None,
) -> Executed:
    """Run a notebook top to bottom in a fresh kernel; raises nbclient's CellExecutionError
    on the first failing cell.

    ``smoke`` sets ``RESNET_EXPLORER_SMOKE=1`` and `SMOKE_KERNEL_ENV`; ``runs`` sets ``RESNET_EXPLORER_RUNS`` (where
    the notebook writes its runs); ``cwd`` is the kernel's working directory (default: the
    notebook's folder). With ``summary``, the variable of that name is read back from the
    kernel at the end (a JSON round trip) into ``Executed.summary``.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = _read(path)
    extra = {SMOKE_ENV: "1" if smoke else "0", **({RUNS_ENV: str(runs)} if runs is not None else {}),
             "PYTHONUNBUFFERED": "1", **(SMOKE_KERNEL_ENV if smoke else {}), **(env or {})}
    if summary:
        nb.cells.append(nbformat.v4.new_code_cell(
            f"import json as _json\nprint({SUMMARY_MARK!r} + _json.dumps(globals().get({summary!r}), default=str))"))
    with tempfile.TemporaryDirectory(prefix="resnet-explorer-kernel-") as kernel_dir:
        km = _kernel_manager(Path(kernel_dir), extra)
        client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=False,
                                resources={"metadata": {"path": str(cwd or path.parent)}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    value = None
    if summary:
        last = nb.cells.pop()
        for out in last.outputs:
            text = out.get("text", "")
            if out.get("output_type") == "stream" and SUMMARY_MARK in text:
                value = json.loads(text.split(SUMMARY_MARK, 1)[1])
    return Executed(path, nb, seconds, value)


# -- command line -----------------------------------------------------------------------------------
def _paths(given: Sequence[str]) -> list[Path]:
    paths = [Path(p) for p in given] if given else notebook_paths(walkthrough_dir())
    if not paths:
        raise SystemExit(f"no notebooks given and none in {walkthrough_dir()}")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnet_explorer.notebooks",
                                description="Strip, check and run the walkthrough notebooks.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the walkthrough notebooks of this install")
    for name, text in (("strip", "remove outputs in place"), ("check", "fail on outputs or parameter cells"),
                       ("setup", "give each notebook the setup cell and the short-mode line, in place")):
        sub.add_parser(name, help=text).add_argument("notebooks", nargs="*")
    links = sub.add_parser("links", help="the Colab links of notebooks/README.md, for a GitHub repository")
    links.add_argument("--repo", required=True, help="owner/name on GitHub")
    links.add_argument("--branch", default="main")
    run = sub.add_parser("run", help="execute notebooks headless")
    run.add_argument("notebooks", nargs="*")
    run.add_argument("--smoke", action="store_true", help=f"smoke mode ({SMOKE_ENV}=1)")
    run.add_argument("--out", help="write each executed notebook (with outputs) into this folder")
    run.add_argument("--runs", help=f"where the notebooks write their runs ({RUNS_ENV})")
    args = p.parse_args(argv)

    if args.command == "links":
        print(hosted_links(args.repo, args.branch))
        return 0
    if args.command == "list":
        for path in notebook_paths(walkthrough_dir()):
            print(path)
        return 0
    paths = _paths(args.notebooks)
    if args.command == "strip":
        changed = strip(paths)
        print(f"stripped {len(changed)} of {len(paths)} notebooks" +
              "".join(f"\n  {c}" for c in changed))
        return 0
    if args.command == "setup":
        changed = apply_setup_files(paths)
        print(f"set up {len(changed)} of {len(paths)} notebooks" + "".join(f"\n  {c}" for c in changed))
        return 0
    if args.command == "check":
        bad = check(paths)
        for path, found in bad.items():
            print(f"{path}: {'; '.join(found)}")
        if bad:
            print(f"fix with: python -m resnet_explorer.notebooks strip {' '.join(bad)}")
        return 1 if bad else 0

    import nbformat
    from nbclient.exceptions import CellExecutionError

    runs = Path(args.runs).resolve() if args.runs else None
    total, failed = 0.0, []
    for path in paths:
        try:
            # a packaged notebook (a wheel's site-packages) runs, and writes its runs/, in the working directory
            cwd = Path.cwd() if path.resolve().is_relative_to(_PACKAGE) else None
            done = execute(path, smoke=args.smoke, cwd=cwd, runs=runs, summary=None)
        except CellExecutionError as e:
            print(f"{path}: FAILED\n{e}", flush=True)
            failed.append(path)
            continue
        total += done.seconds
        print(f"{path}: {done.seconds:.0f} s", flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            nbformat.write(done.nb, str(Path(args.out) / path.name))
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran in {total:.0f} s"
          + (" (smoke mode)" if args.smoke else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
