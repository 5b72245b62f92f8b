"""The degradation experiment in numbers and one HTML page.

`degradation_summary` reads run directories into a table (costs, final and best errors)
and checks the paper's orderings of Fig. 1 / Fig. 6 on final *training* error (and, as
extra information, on test error); `summary_text` prints it; `write_report` writes one
self-contained HTML file for an experiment directory (figures, table, orderings).
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .count import CONVENTION, count
from .figures import (
    PathLike,
    cost_bars,
    error_curves,
    gates_figure,
    gradient_history_figure,
    gradient_norms_figure,
    layer_responses_figure,
)
from .errors import UserError
from .experiments import read_manifest
from .paper import CIFAR10, RESNET, figures_for
from .recipes import Recipe
from .runs import Run, RunDir, load_runs
from .safeio import atomic_write
from .verdict import LABELS, decide, difference_noise, explain, standard_error
from .why.section import why_section_html



# -- the numbers ------------------------------------------------------------------------------------
def _run_row(run: Run) -> dict:
    """One run's costs and errors (fractions, as in metrics.jsonl; None where not logged yet).
    The final training error is the eval-mode pass over a fixed training subset recorded by
    the run's analysis where there is one (``train_measure`` "eval"), else the last logged
    window of training batches ("window")."""
    train = [r["train_error"] for r in run.rows("train") if r.get("train_error") is not None]
    subset = (run.analysis or {}).get("train_subset")
    eval_train = subset.get("error") if isinstance(subset, dict) else None
    if not isinstance(eval_train, (int, float)) or isinstance(eval_train, bool) or not 0 <= eval_train <= 1:
        eval_train = None  # a hand-edited or damaged analysis.json: fall back to the window
    test = [r["test_error"] for r in run.rows("eval") if r.get("test_error") is not None]
    c = count(run.spec)
    paper = _table6(run.spec)
    return {
        "name": run.name,
        "arch": run.spec.name,
        "depth": run.spec.depth,
        "residual": run.spec.residual,
        "shortcut": run.spec.shortcut,
        "params": c.params,
        "macs": c.macs,
        "final_train_error": eval_train if eval_train is not None else train[-1] if train else None,
        "train_measure": "eval" if eval_train is not None else "window",
        "train_subset_images": subset.get("images") if eval_train is not None else None,
        "window_train_error": train[-1] if train else None,
        "best_train_error": min(train) if train else None,
        "final_test_error": test[-1] if test else None,
        "best_test_error": min(test) if test else None,
        "iterations": max((r.get("iter", 0) for r in run.metrics), default=0),
        "wall_time": max((r.get("wall_time", 0.0) for r in run.metrics), default=0.0),
        **paper, **_images(run, eval_train is not None, subset),
    }


def _images(run: Run, eval_measure: bool, subset: dict | None) -> dict:
    """On how many images the final training and test errors were measured (None where the
    run's records do not say): the analysis' subset, or the last window of training batches;
    the evaluation set."""
    try:
        _, recipe, data, _ = RunDir(run.dir).config()
    except (UserError, OSError):
        recipe, data = None, {}
    iters = [r.get("iter", 0) for r in run.rows("train")]
    window = (iters[-1] - (iters[-2] if len(iters) > 1 else 0)) if iters else 0
    train = subset.get("images") if eval_measure and subset else (
        window * recipe.batch_size if recipe is not None and window > 0 else None)
    test = data.get("eval_size") if isinstance(data, dict) else None
    ok = lambda n: n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None  # noqa: E731
    return {"final_train_images": ok(train), "final_test_images": ok(test)}


def _table6(spec) -> dict:
    """Table 6's CIFAR-10 test error (percent) for exactly this net, else the nearest net's as a
    reference (``paper_reference``: the value, the net it belongs to and how this one differs)."""
    shown = [s for s in figures_for(spec) if s.figure.quantity == CIFAR10 and s.figure.source == RESNET]
    exact = next((s.figure.value for s in shown if s.exact), None)
    ref = next((s for s in shown if not s.exact), None) if exact is None else None
    text = (f"{ref.figure.printed} % is {ref.figure.label}'s ({ref.figure.table}); this net: {ref.differs}"
            if ref else None)
    return {"paper_test_error": exact, "paper_reference": text}


def _label(row: dict) -> str:
    return f"{'ResNet' if row['residual'] else 'plain'}-{row['depth']}"


def _pick(rows: list[dict], residual: bool, key: str, deepest: bool) -> dict | None:
    """The shallowest / deepest run of one kind with a value for ``key`` (first one on ties)."""
    have = [r for r in rows if r["residual"] == residual and r[key] is not None]
    if not have:
        return None
    depth = (max if deepest else min)(r["depth"] for r in have)
    return next(r for r in have if r["depth"] == depth)


# What each ordering means, for a student (one sentence each, in `orderings`' order).
MEANINGS = (
    "The degradation problem: the deeper plain net fits its own training images worse than the "
    "shallower one, although it could copy it and add identity layers, so it is an optimisation failure, not overfitting.",
    "Shortcuts fix it: at the same depth and the same number of weights, the residual net fits "
    "the training images better than the plain one.",
    "With shortcuts, depth helps again: the deeper ResNet fits the training images at least as "
    "well as the shallower one.",
)


def _claim(text: str, a: dict | None, b: dict | None, key: str,
           test: Callable[[float, float], bool], fallback: str, meaning: str = "") -> dict:
    """``{"claim", "holds", "verdict", "values", "margin", "noise", "meaning"}`` comparing run a
    with run b on ``key``. ``holds``: which way it came out; ``margin``: by how much it holds
    (negative: fails); ``noise``: the standard error of the difference (`verdict`); ``verdict``:
    holds / fails / too close to call (within Z standard errors) / None without the runs."""
    if a is None or b is None or (a["depth"], a["residual"]) == (b["depth"], b["residual"]):
        return {"claim": fallback, "holds": None, "verdict": None, "values": {}, "margin": None, "noise": None,
                "meaning": meaning}
    images = key.replace("_error", "_images")
    margin = a[key] - b[key] if test(1.0, 0.0) else b[key] - a[key]
    noise = difference_noise(*(standard_error(r[key], r.get(images)) for r in (a, b)))
    return {
        "claim": text.format(a=_label(a), b=_label(b)),
        "holds": bool(test(a[key], b[key])),
        "verdict": decide(margin, noise),
        "values": {a["name"]: a[key], b["name"]: b[key]},
        "margin": margin, "noise": noise,
        "meaning": meaning,
    }


def _deepest_pair(rows: list[dict], key: str) -> tuple[dict | None, dict | None]:
    """The residual and plain run at the deepest depth where both have a value for ``key``."""
    both = {r["depth"] for r in rows if r["residual"] and r[key] is not None} & {
        r["depth"] for r in rows if not r["residual"] and r[key] is not None}
    if not both:
        return None, None
    d = max(both)
    pick = lambda res: next(r for r in rows if r["residual"] == res and r["depth"] == d and r[key] is not None)  # noqa: E731
    return pick(True), pick(False)


def orderings(rows: list[dict], key: str = "final_train_error") -> list[dict]:
    """The paper's three orderings (Fig. 1 / 6) on ``key``; holds is None where runs are missing."""
    deep_plain, shallow_plain = _pick(rows, False, key, True), _pick(rows, False, key, False)
    deep_res, shallow_res = _pick(rows, True, key, True), _pick(rows, True, key, False)
    res_at, plain_at = _deepest_pair(rows, key)
    return [
        _claim("{a} > {b}", deep_plain, shallow_plain, key, lambda a, b: a > b,
               "deepest plain > shallowest plain (needs two plain depths)", MEANINGS[0]),
        _claim("{a} < {b}", res_at, plain_at, key, lambda a, b: a < b,
               "deepest ResNet < plain net of the same depth (needs both)", MEANINGS[1]),
        _claim("{a} <= {b}", deep_res, shallow_res, key, lambda a, b: a <= b,
               "deepest ResNet <= shallowest ResNet (needs two residual depths)", MEANINGS[2]),
    ]


def degradation_summary(run_dirs: Iterable[PathLike]) -> dict:
    """Per-run costs and errors, and the paper's orderings on final training (and test) error.

    Returns ``{"runs": [...], "orderings": [...], "test_orderings": [...]}``; errors are
    fractions (0..1); each ordering is ``{"claim", "holds": bool | None, "values"}``.
    """
    rows = [_run_row(r) for r in load_runs(run_dirs)]
    return {
        "runs": rows,
        "orderings": orderings(rows, "final_train_error"),
        "test_orderings": orderings(rows, "final_test_error"),
    }


# -- text ---------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def verdict_text(o: dict) -> str:
    """An ordering's verdict in words: "✓ holds", "✗ FAILS", "≈ too close to call at this budget"."""
    return LABELS[o.get("verdict")]


def _ordering_lines(items: list[dict], meanings: bool = False) -> list[str]:
    """Each ordering: its verdict, claim and values; then how sure (the margin and the noise) and,
    for a verdict that holds or fails, what it means."""
    lines = []
    for o in items:
        values = ", ".join(f"{k} {_pct(v)} %" for k, v in o["values"].items())
        lines.append(f"  {verdict_text(o):9} {o['claim']}" + (f"   ({values})" if values else ""))
        if why := explain(o.get("verdict"), o.get("margin"), o.get("noise")):
            lines.append(f"            {why}")
        if meanings and o.get("meaning") and o.get("verdict") in ("holds", "fails", None):
            lines.append(f"            {o['meaning']}")
    return lines


def train_measure_text(rows: list[dict]) -> str:
    """One sentence: how the final training errors in ``rows`` were measured."""
    measures = {r.get("train_measure") for r in rows if r.get("final_train_error") is not None}
    images = sorted({r["train_subset_images"] for r in rows if r.get("train_measure") == "eval"})
    eval_text = (f"one pass in eval mode (BN running statistics, no augmentation) over the first "
                 f"{'/'.join(map(str, images))} training images, after training")
    window = "the last logged window of augmented training batches, in train mode"
    if measures == {"eval"}:
        return f"Training error is {eval_text}."
    if measures == {"window"}:
        return f"Training error is {window}."
    return f"Training error is {eval_text} where the run has an analysis, else {window}."


def summary_text(summary: dict) -> str:
    """A terminal table of the runs and the orderings, each marked holds / FAILS / too close to call."""
    header = ("run", "depth", "params", "M-adds", "train err %", "test err %", "best test %")
    table = [header] + [
        (r["name"], str(r["depth"]), f"{r['params'] / 1e6:.3f}M", f"{r['macs'] / 1e6:.1f}M",
         _pct(r["final_train_error"]), _pct(r["final_test_error"]), _pct(r["best_test_error"]))
        for r in summary["runs"]
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    lines += ["", train_measure_text(summary["runs"]), "Orderings of Fig. 6 on final training error:"]
    lines += _ordering_lines(summary["orderings"], meanings=True)
    lines += ["Same on final test error:"] + _ordering_lines(summary.get("test_orderings", []))
    return "\n".join(lines)


def run_gates(run: Run) -> dict[str, list[dict]] | None:
    """A gated run's per-block mean gates from its ``analysis.json`` ({"init": [...], "final":
    [...]}, each entry {"name", "mean", "std"}); None without them or where they are malformed."""
    g = run.analysis.get("gate_means") if isinstance(run.analysis, dict) else None
    ok = lambda e: (isinstance(e, dict) and isinstance(e.get("name"), str)  # noqa: E731
                    and all(isinstance(e.get(k), (int, float)) for k in ("mean", "std")))
    if not (isinstance(g, dict) and all(isinstance(g.get(k), list) and all(map(ok, g[k])) for k in ("init", "final"))):
        return None
    return g if len(g["init"]) == len(g["final"]) > 0 else None


def gates_text(runs: Sequence[Run]) -> str:
    """Each gated run's mean gate T(x) per block, at initialisation -> after training."""
    lines = []
    for r in runs:
        if (g := run_gates(r)) is not None:
            lines.append(f"{r.name}: mean gate T(x) per block (1 = shortcut closed), at initialisation -> after training")
            lines += [f"  {a['name']:>10}  {a['mean']:.3f} -> {b['mean']:.3f}  (std {b['std']:.3f})"
                      for a, b in zip(g["init"], g["final"])]
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.holds { color: #1a7f37; font-weight: bold; } .fails { color: #c62828; font-weight: bold; }
.na { color: #777; } .tie { color: #8a6d00; font-weight: bold; } .meta { color: #555; } figure { margin: 1.5em 0; }
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _machine(runs: Sequence[Run]) -> str:
    seen = []
    for r in runs:
        m = f"{r.env.get('device_name', '?')}, torch {r.env.get('torch', '?')}"
        if m not in seen:
            seen.append(m)
    return "; ".join(seen) or "unknown"


def _summary_table(summary: dict) -> str:
    head = ("run", "arch", "depth", "params", "multiply-adds", "iterations", "final train err %",
            "best train err %", "final test err %", "best test err %", "paper test err % (Table 6)")
    body = []
    for r in summary["runs"]:
        paper = (f"{r['paper_test_error']:.2f}" if r["paper_test_error"] is not None
                 else f"({r['paper_reference']})" if r.get("paper_reference") else "-")
        cells = (r["name"], r["arch"], r["depth"], f"{r['params']:,}", f"{r['macs'] / 1e6:.1f} M",
                 r["iterations"], _pct(r["final_train_error"]), _pct(r["best_train_error"]),
                 _pct(r["final_test_error"]), _pct(r["best_test_error"]), paper)
        body.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join(body) + "</table>")


def _orderings_html(items: list[dict]) -> str:
    out = []
    for o in items:
        cls = {"holds": "holds", "fails": "fails", "too close to call": "tie"}.get(o.get("verdict"), "na")
        values = ", ".join(f"{_e(k)}: {_pct(v)} %" for k, v in o["values"].items())
        why = explain(o.get("verdict"), o.get("margin"), o.get("noise"))
        meaning = (f"<br><small>{_e(o['meaning'])}</small>" if o.get("meaning") and cls != "tie" else "")
        out.append(f'<li><span class="{cls}">{_e(verdict_text(o))}</span> {_e(o["claim"])}'
                   + (f" <span class='meta'>({values})</span>" if values else "")
                   + (f"<br><small class='meta'>{_e(why)}</small>" if why else "") + meaning + "</li>")
    return "<ul>" + "".join(out) + "</ul>"


def _figures_html(run_dirs: list[Path], runs: Sequence[Run]) -> str:
    """Each figure as a div; plotly.js is inlined in the first one only."""
    parts, first = [], True
    has = lambda k: any(r.analysis and r.analysis.get(k) for r in runs)  # noqa: E731
    figures = [("Fig. 6: training and test error", error_curves(run_dirs) if runs else None)]
    figures.append(("Fig. 7: layer responses",
                    layer_responses_figure(run_dirs) if has("layer_responses") else None))
    for which in ("init", "final"):
        figures.append((f"Gradient norms ({which})",
                        gradient_norms_figure(run_dirs, which) if has("gradient_norms") else None))
    if any(r.rows("grad") for r in runs):
        figures.append(("Gradient norms during training", gradient_history_figure(run_dirs)))
    gated = {r.name: g for r in runs if (g := run_gates(r)) is not None}
    if gated:
        figures.append(("Highway gates: mean T(x) per block", gates_figure(
            {f"{name}, {when}": g[k] for name, g in gated.items()
             for k, when in (("init", "at initialisation"), ("final", "after training"))})))
    figures.append(("Cost", cost_bars([r.spec for r in runs], labels=[r.name for r in runs]) if runs else None))
    for title, fig in figures:
        if fig is None:
            parts.append(f"<h3>{_e(title)}</h3><p class='na'>no data yet</p>")
            continue
        div = fig.to_html(full_html=False, include_plotlyjs=first, default_width="100%")
        parts.append(f"<figure><h3>{_e(title)}</h3>{div}</figure>")
        first = False
    return "\n".join(parts)


def write_report(exp_dir: PathLike, out_path: PathLike | None = None, title: str | None = None,
                 notes: Sequence[str] = (), why: bool = False) -> Path:
    """One self-contained HTML report of an experiment (default ``<exp_dir>/report.html``);
    with ``why``, its section "Why shortcuts help" (`why.section`: lesion, shattered
    gradients and a loss landscape of its nets; the demo's, tens of seconds of CPU on small nets)."""
    exp_dir = Path(exp_dir)
    manifest = read_manifest(exp_dir)
    run_dirs = [exp_dir / r["dir"] for r in manifest["runs"]]
    runs = load_runs(run_dirs)
    summary = degradation_summary(run_dirs)
    title = title or f"{manifest.get('name', exp_dir.name)} experiment"
    unfinished = [f"{r['name']} ({r.get('status', '?')})" for r in manifest["runs"]
                  if r.get("status") != "finished"]
    body = [
        f"<h1>{_e(title)}</h1>",
        "<p class='meta'>"
        f"data: {_e(manifest.get('data', '?'))} &middot; "
        f"date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} &middot; "
        f"machine: {_e(_machine(runs))}</p>",
    ]
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if unfinished:
        body.append(f"<p class='na'>not finished: {_e(', '.join(unfinished))}</p>")
    body += [
        "<h2>Orderings of Fig. 6 (final training error)</h2>",
        f"<p class='meta'>{_e(train_measure_text(summary['runs']))}</p>", _orderings_html(summary["orderings"]),
        "<h3>The same on final test error</h3>", _orderings_html(summary["test_orderings"]),
        "<h2>Runs</h2>", _summary_table(summary),
        f"<p class='meta'>Multiply-adds: {_e(CONVENTION)}. The paper's Table 6 errors are for its "
        "own nets (option A, 16 wide, 32×32) trained 64k iterations on CIFAR-10: a run of exactly such a net "
        "shows its number; any other shows, in parentheses, the nearest net's, and how it differs.</p>",
        "<h2>Figures</h2>", _figures_html(run_dirs, runs),
        why_section_html(run_dirs, manifest.get("data")) if why else "",
    ]
    page = ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    out = Path(out_path) if out_path is not None else exp_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, page.encode("utf-8"))


# -- what a report says about the experiment's settings ----------------------------------------------
def cpu_demo_note(recipe: Recipe, width: int) -> str:
    """One sentence for a student: the CPU demo's settings (the same for every net)."""
    return (f"a CPU demo: nets {width} wide (the paper's are 16), every one trained with the same recipe "
            f"{recipe.name}: SGD, momentum {recipe.momentum}, weight decay {recipe.weight_decay:g}, "
            f"{recipe.max_iters} iterations of batch {recipe.batch_size} (the paper: 64,000 of 128), "
            f"lr {recipe.lr} divided by 10 at iterations {' and '.join(map(str, recipe.milestones))}, "
            + ("random crops and flips" if recipe.augment else "no augmentation (the demo asks how well "
               "each net fits a fixed training set)"))


def data_notes(data: str) -> list[str]:
    """What a report should say about the embedded datasets (nothing for real ones)."""
    if data.startswith("synthetic-demo"):
        return ["data: the embedded synthetic-demo set (10,000 training images of 10 classes of generated "
                "16×16 patterns: a colour cast per class, which even a badly trained net can use, and 5 "
                "textured sub-types per class, which take depth and training to fit), not CIFAR-10: "
                "errors are not comparable with the paper's"]
    if data.startswith("synthetic"):
        return ["data: the embedded synthetic CIFAR-shaped set (10 classes of generated patterns), "
                "not CIFAR-10: errors are not comparable with the paper's"]
    return []
